# The demo's machines: `web` serves a page with nginx from Debian's archive.
web = ["@orbstack/demo-web"]
db = ["@orbstack/demo-db"]
