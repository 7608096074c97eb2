//go:build linux

package orbctlcmd

import (
	"fmt"
	"strconv"
	"strings"
)

// RunFlags is what ParseRunFlags understood of `orbctl run`'s arguments.
type RunFlags struct {
	Machine, User, Workdir          string
	MachineSet, UserSet, WorkdirSet bool
	Shell, Path, Help               bool
	// WorkdirFlag is the token that set Workdir ("-w", "--workdir=", ...),
	// for refusing it where -w does not exist yet.
	WorkdirFlag string
	// Command is the command and its arguments, verbatim.
	Command []string
}

// ParseRunFlags follows OrbStack's own run parser (§6): flags come first;
// the first argument not starting with "-" ends them and everything after it
// is the command, untouched. -m/-u/-w take a value ("-m X", "--machine X",
// "-machine X", "-m=X"); -s/-p/-h are booleans that accept "=true/false".
// Any other dash token, including a bare "--", is an unknown flag.
func ParseRunFlags(args []string) (RunFlags, error) {
	var f RunFlags
	for i := 0; i < len(args); i++ {
		tok := args[i]
		if !strings.HasPrefix(tok, "-") {
			f.Command = args[i:]
			return f, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(tok, "-"), "=")
		flagTok := tok
		if hasValue {
			flagTok = tok[:strings.IndexByte(tok, '=')]
		}
		var target *string
		var set *bool
		switch name {
		case "m", "machine":
			target, set = &f.Machine, &f.MachineSet
		case "u", "user":
			target, set = &f.User, &f.UserSet
		case "w", "workdir":
			target, set = &f.Workdir, &f.WorkdirSet
		case "s", "shell", "p", "path", "h", "help":
			b := true
			if hasValue {
				var err error
				if b, err = strconv.ParseBool(value); err != nil {
					return f, fmt.Errorf("invalid value for flag %s: %s", flagTok, value)
				}
			}
			switch name[0] {
			case 's':
				f.Shell = b
			case 'p':
				f.Path = b
			default:
				f.Help = b
			}
			continue
		default:
			return f, fmt.Errorf("unknown flag %s", flagTok)
		}
		if !hasValue {
			if i+1 >= len(args) {
				return f, fmt.Errorf("missing value for flag %s", flagTok)
			}
			i++
			value = args[i]
		}
		*target, *set = value, true
		if name[0] == 'w' {
			f.WorkdirFlag = flagTok
		}
	}
	return f, nil
}
