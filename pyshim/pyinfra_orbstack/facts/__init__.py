"""pyinfra facts for OrbStack.

``orbstack`` holds the facts read on the Mac where OrbStack runs (normally ``@local``);
``network`` holds the facts read inside a machine (an ``@orbstack/NAME`` host). Both are
re-exported by the top-level ``orbstack`` module, which is what makes
``pyinfra @local fact orbstack.Machines`` work from the CLI.
"""
