package controller

import (
	"github.com/ferrycluster/ferry/internal/api"
)

func res(cpus int, memMiB, diskGiB int64) api.Resources {
	return api.Resources{CPUs: cpus, Memory: api.Bytes(memMiB << 20), Disk: api.Bytes(diskGiB << 30)}
}
