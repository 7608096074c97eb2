package command

import "github.com/spf13/cobra"

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		if sub.Name() == "help" {
			continue
		}
		out = append(out, allCommands(sub)...)
	}
	return out
}
