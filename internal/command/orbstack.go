package command

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// NewCmdStatus builds `status`.
func NewCmdStatus(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Print whether OrbStack runs",
		Long: `Print OrbStack's own state: Running, Stopped or Starting ("orbctl status", whose
exit statuses 1 and 2 for the last two are answers here, so this exits 0).`,
		Example: `  pyinfra-orbstack status`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				word, err := c.Status(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(f.Out, word)
				return nil
			})
		},
	}
}

// SSHJSON is what `ssh-info --json` prints.
type SSHJSON struct {
	orbctl.SSHInfo
	Command string `json:"command"` // ready to paste into a shell
}

// NewCmdSSHInfo builds `ssh-info`.
func NewCmdSSHInfo(f *Factory) *cobra.Command {
	var machine, user string
	cmd := &cobra.Command{
		Use:   "ssh-info",
		Short: "Print how to reach a machine through OrbStack's SSH proxy",
		Long: `Print, as JSON, how to SSH into a machine through OrbStack's SSH proxy (from
"orbctl ssh"): {"host", "port", "user", "key", "command"}. user is OrbStack's
routing user: MACHINE, USER@MACHINE, or default (the default machine) without
--machine. command is ready to paste.`,
		Example: `  pyinfra-orbstack ssh-info --machine web --user deploy`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user != "" && machine == "" {
				return &usageError{cmd: cmd, err: errors.New("--user needs --machine")}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				info, err := c.SSH(cmd.Context())
				if err != nil {
					return err
				}
				switch {
				case machine != "" && user != "":
					info.User = user + "@" + machine
				case machine != "":
					info.User = machine
				}
				command := fmt.Sprintf("ssh -p %d -i %s %s", info.Port, shellPath(info.Key), shellQuote(info.User+"@"+info.Host))
				return printJSON(f, SSHJSON{SSHInfo: info, Command: command})
			})
		},
	}
	cmd.Flags().StringVar(&machine, "machine", "", "the machine to reach (default: the default machine)")
	cmd.Flags().StringVarP(&user, "user", "u", "", "log in as this user (default: the machine's)")
	return cmd
}

func newCmdMachineLogs(f *Factory) *cobra.Command {
	var all, missingOK bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a machine's console log",
		Long: `Print a machine's console log ("orbctl logs"); --all adds OrbStack's runtime
logs. A missing machine is exit status 3, or prints nothing with --missing-ok.`,
		Example: `  pyinfra-orbstack machine logs --all web`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return withOrbctl(f, func(c *orbctl.Client) error {
				out, err := c.Logs(cmd.Context(), a[0], all)
				if missingOK && errors.Is(err, orbctl.ErrMachineNotFound) {
					return nil
				}
				if err != nil {
					return err
				}
				fmt.Fprint(f.Out, out)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "add OrbStack's runtime logs")
	cmd.Flags().BoolVar(&missingOK, "missing-ok", false, "a missing machine is not an error")
	return cmd
}

// shellQuote quotes s for a POSIX shell, leaving plain words alone.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// shellPath quotes a path, leaving a leading ~/ expandable.
func shellPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return "~/" + shellQuote(rest)
	}
	return shellQuote(p)
}
