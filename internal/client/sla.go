package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/sla"
)

// SLA: policies, their assignment to instances and customers, maintenance
// windows, and the reports the server computes from its ledger (see
// package sla). Reports take a month ("2026-11"; empty: the current one)
// and a time zone (empty: UTC).

// SLAAssignments are the policy assignments by instance and by customer.
type SLAAssignments struct {
	Instances map[string]sla.Assignment `json:"instances"`
	Customers map[string]sla.Assignment `json:"customers"`
}

// ListSLAPolicies returns every policy, by name.
func (c *Client) ListSLAPolicies(ctx context.Context) ([]sla.Policy, error) {
	var out api.List[sla.Policy]
	if _, err := c.do(ctx, http.MethodGet, "/v1/sla/policies", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// GetSLAPolicy returns the named policy.
func (c *Client) GetSLAPolicy(ctx context.Context, name string) (*sla.Policy, error) {
	p, err := objectPath("policy", "/v1/sla/policies", name)
	if err != nil {
		return nil, err
	}
	var out sla.Policy
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutSLAPolicy creates or replaces a policy. The server validates it (400
// with Field naming the fault, e.g. "tiers[1].below_percent").
func (c *Client) PutSLAPolicy(ctx context.Context, pol sla.Policy) (*sla.Policy, error) {
	p, err := objectPath("policy", "/v1/sla/policies", pol.Name)
	if err != nil {
		return nil, err
	}
	var out sla.Policy
	if _, err := c.do(ctx, http.MethodPut, p, nil, pol, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateSLAPolicy creates a policy, and refuses to replace one of that
// name (409 already_exists: [IsExists]).
func (c *Client) CreateSLAPolicy(ctx context.Context, pol sla.Policy) (*sla.Policy, error) {
	p, err := objectPath("policy", "/v1/sla/policies", pol.Name)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(pol)
	if err != nil {
		return nil, fmt.Errorf("PUT %s: encoding request: %w", p, err)
	}
	req, err := c.newRequest(ctx, http.MethodPut, p, nil, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("If-None-Match", "*")
	resp, err := roundTrip(c.hc, req)
	if err == nil {
		resp, err = check(resp)
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out sla.Policy
	if err := decode(resp, http.MethodPut, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSLAPolicy deletes a policy; the server refuses (409) while it is
// assigned.
func (c *Client) DeleteSLAPolicy(ctx context.Context, name string) error {
	p, err := objectPath("policy", "/v1/sla/policies", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, nil, nil)
	return err
}

// ListSLAAssignments returns the policy assignments.
func (c *Client) ListSLAAssignments(ctx context.Context) (*SLAAssignments, error) {
	var out SLAAssignments
	if _, err := c.do(ctx, http.MethodGet, "/v1/sla/assignments", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AssignSLA gives an instance (kind "instances") or a customer (kind
// "customers") a policy and, optionally, a monthly price.
func (c *Client) AssignSLA(ctx context.Context, kind, name string, a sla.Assignment) error {
	p, err := assignmentPath(kind, name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPut, p, nil, a, nil)
	return err
}

// UnassignSLA removes an assignment.
func (c *Client) UnassignSLA(ctx context.Context, kind, name string) error {
	p, err := assignmentPath(kind, name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, nil, nil)
	return err
}

func assignmentPath(kind, name string) (string, error) {
	if kind != "instances" && kind != "customers" {
		return "", fmt.Errorf("client: assignment kind %q: want instances or customers", kind)
	}
	return objectPath(kind, "/v1/sla/assignments/"+kind, name)
}

// ScheduleMaintenance announces a maintenance window (201).
func (c *Client) ScheduleMaintenance(ctx context.Context, req api.MaintenanceRequest) (*api.Maintenance, error) {
	var out api.Maintenance
	if _, err := c.do(ctx, http.MethodPost, "/v1/maintenance", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListMaintenance returns the maintenance windows, by start.
func (c *Client) ListMaintenance(ctx context.Context) ([]api.Maintenance, error) {
	var out api.List[api.Maintenance]
	if _, err := c.do(ctx, http.MethodGet, "/v1/maintenance", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// CancelMaintenance deletes a maintenance window.
func (c *Client) CancelMaintenance(ctx context.Context, id string) error {
	p, err := objectPath("maintenance", "/v1/maintenance", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, nil, nil)
	return err
}

// SLAQuery selects a report's month, time zone and customer.
type SLAQuery struct {
	Month    string // "2026-11"; empty: the current month
	TZ       string // IANA zone; empty: UTC
	Customer string // empty: every customer
}

func (q SLAQuery) values() url.Values {
	v := url.Values{}
	if q.Month != "" {
		v.Set("month", q.Month)
	}
	if q.TZ != "" {
		v.Set("tz", q.TZ)
	}
	if q.Customer != "" {
		v.Set("customer", q.Customer)
	}
	return v
}

// SLAReport returns the report of a month from the cluster's ledger, and
// the instances of the ledger that no policy covers (the report prices
// none of their downtime).
func (c *Client) SLAReport(ctx context.Context, q SLAQuery) (*sla.Report, []string, error) {
	var out sla.Report
	resp, err := c.exchange(ctx, http.MethodGet, "/v1/sla/report", q.values(), nil, &out)
	if err != nil {
		return nil, nil, err
	}
	var unpriced []string
	if h := resp.Header.Get("Ferry-Unpriced"); h != "" {
		unpriced = strings.Split(h, ",")
	}
	return &out, unpriced, nil
}

// SLAIncidents returns the timeline of one instance in a month.
func (c *Client) SLAIncidents(ctx context.Context, name string, q SLAQuery) ([]sla.Interval, error) {
	p, err := objectPath("instance", "/v1/sla/incidents", name)
	if err != nil {
		return nil, err
	}
	var out api.List[sla.Interval]
	if _, err := c.do(ctx, http.MethodGet, p, q.values(), nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// SLAExport writes the month's events (JSON lines, sla.ParseEvents's
// format) to w: replayed with the same policies and cut at the same
// instant, they give the same report.
func (c *Client) SLAExport(ctx context.Context, q SLAQuery, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/sla/export", q.values(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// SLAForecast returns the forecast per policy from the cluster's observed
// host failures and measured failover and migration downtimes.
func (c *Client) SLAForecast(ctx context.Context) (*sla.ForecastReport, error) {
	var out sla.ForecastReport
	if _, err := c.do(ctx, http.MethodGet, "/v1/sla/forecast", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
