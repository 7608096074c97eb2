package command

import (
	"encoding/json"
	"sort"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// printJSON writes v as indented JSON.
func printJSON(f *Factory, v any) error {
	enc := json.NewEncoder(f.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// machineJSON is a machine as `list --json` and `machine info --json` print
// it: the protocol's Machine plus config, every key orbctl reported there.
type machineJSON struct {
	orbctl.Machine
	Config map[string]any `json:"config"`
}

func toJSON(m orbctl.Machine) machineJSON {
	config := m.Config
	if config == nil {
		config = map[string]any{}
	}
	return machineJSON{Machine: m, Config: config}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
