package api_test

import (
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestMigrateRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		req       api.MigrateRequest
		wantField string
	}{
		{name: "defaults", req: api.MigrateRequest{}},
		{name: "everything", req: api.MigrateRequest{To: "n2", Mode: "cold", DowntimeLimitMS: 60000, ConvergeSeconds: 3600, Fallback: "fail"}},
		{name: "bad to", req: api.MigrateRequest{To: "N2"}, wantField: "to"},
		{name: "bad mode", req: api.MigrateRequest{Mode: "hot"}, wantField: "mode"},
		{name: "negative downtime", req: api.MigrateRequest{DowntimeLimitMS: -1}, wantField: "downtimeLimitMs"},
		{name: "long downtime", req: api.MigrateRequest{DowntimeLimitMS: 60001}, wantField: "downtimeLimitMs"},
		{name: "negative converge", req: api.MigrateRequest{ConvergeSeconds: -1}, wantField: "convergeSeconds"},
		{name: "long converge", req: api.MigrateRequest{ConvergeSeconds: 3601}, wantField: "convergeSeconds"},
		{name: "bad fallback", req: api.MigrateRequest{Fallback: "retry"}, wantField: "fallback"},
		{name: "bandwidth", req: api.MigrateRequest{MaxBandwidth: 1 << 20}},
		{name: "small bandwidth", req: api.MigrateRequest{MaxBandwidth: 1000}, wantField: "maxBandwidth"},
		{name: "negative bandwidth", req: api.MigrateRequest{MaxBandwidth: -1}, wantField: "maxBandwidth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fieldOf(tc.req.Validate()); got != tc.wantField {
				t.Fatalf("Validate() field %q, want %q", got, tc.wantField)
			}
		})
	}
	d := api.MigrateRequest{}.WithDefaults()
	if d.Mode != "live" || d.DowntimeLimitMS != 300 || d.ConvergeSeconds != 60 || d.Fallback != "cold" {
		t.Fatalf("defaults %+v", d)
	}
	if got := api.MigrationOperationName("web-1", 3, 2); got != "migrate-web-1-3-2" {
		t.Fatalf("name %s", got)
	}
}

func TestMigrationReportValidate(t *testing.T) {
	for _, tc := range []struct {
		rep       api.MigrationReport
		wantField string
	}{
		{api.MigrationReport{Operation: "m", Phase: "ready", URI: "tcp:a:1"}, ""},
		{api.MigrationReport{Operation: "m", Phase: "failed", Error: "x"}, ""},
		{api.MigrationReport{Phase: "ready", URI: "u"}, "operation"},
		{api.MigrationReport{Operation: "m", Phase: "done"}, "phase"},
		{api.MigrationReport{Operation: "m", Phase: "ready"}, "uri"},
		{api.MigrationReport{Operation: "m", Phase: "transferring", RAMTotal: -1}, "ramTotal"},
	} {
		if got := fieldOf(tc.rep.Validate()); got != tc.wantField {
			t.Errorf("Validate(%+v) field %q, want %q", tc.rep, got, tc.wantField)
		}
	}
}

func TestDrainRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		req       api.DrainRequest
		wantField string
	}{
		{api.DrainRequest{}, ""},
		{api.DrainRequest{Mode: "cold", MaxConcurrent: 64}, ""},
		{api.DrainRequest{Mode: "warm"}, "mode"},
		{api.DrainRequest{MaxConcurrent: 65}, "maxConcurrent"},
		{api.DrainRequest{MaxConcurrent: -1}, "maxConcurrent"},
	} {
		if got := fieldOf(tc.req.Validate()); got != tc.wantField {
			t.Errorf("Validate(%+v) field %q, want %q", tc.req, got, tc.wantField)
		}
	}
	if d := (api.DrainRequest{}).WithDefaults(); d.Mode != "live" || d.MaxConcurrent != 2 {
		t.Fatalf("defaults %+v", d)
	}
}
