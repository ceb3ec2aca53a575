//go:build !linux

package agent

import (
	"errors"

	"github.com/ferrycluster/ferry/internal/api"
)

var errNotLinux = errors.New("only supported on Linux; set Capacity explicitly")

func memTotal() (api.Bytes, error) { return 0, errNotLinux }

func freeDisk(string) (api.Bytes, error) { return 0, errNotLinux }
