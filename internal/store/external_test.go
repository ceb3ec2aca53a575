package store_test

import (
	"testing"

	"github.com/ferrycluster/ferry/internal/store/storetest"
)

// TestExternal runs the Collection and Watch checks against Debian's etcd
// server (3.4) as a separate process: ferry's store with an external etcd
// cluster.
func TestExternal(t *testing.T) {
	t.Parallel()
	endpoints := storetest.External(t)
	t.Run("Collection", func(t *testing.T) { testCollection(t, endpoints) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, endpoints) })
}
