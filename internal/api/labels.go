package api

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Limits on node labels.
const (
	MaxLabels        = 64
	maxLabelKeyLen   = 63
	maxLabelValueLen = 63
)

var (
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

// ValidateLabelKey checks a label key such as "rack" or "topology/zone":
// lowercase letters, digits, '.', '_', '-' and '/', 1 to 63 characters,
// starting and ending with a letter or digit.
func ValidateLabelKey(field, key string) error {
	switch {
	case key == "":
		return fieldErr(field, "label key is empty: use lowercase letters, digits, '.', '_', '-' and '/', e.g. rack")
	case len(key) > maxLabelKeyLen:
		return fieldErr(field, "label key %q is %d characters long; at most %d are allowed", key, len(key), maxLabelKeyLen)
	case !labelKeyRE.MatchString(key):
		return fieldErr(field, "label key %q is not valid: use lowercase letters, digits, '.', '_', '-' and '/', starting and ending with a letter or digit", key)
	}
	return nil
}

// ValidateLabelValue checks the value of label key: letters, digits, '.',
// '_' and '-', 1 to 63 characters, starting and ending with a letter or
// digit.
func ValidateLabelValue(field, key, value string) error {
	switch {
	case value == "":
		return fieldErr(field, "label %q has an empty value: give one such as r1 (or remove the label)", key)
	case len(value) > maxLabelValueLen:
		return fieldErr(field, "value of label %q is %d characters long; at most %d are allowed", key, len(value), maxLabelValueLen)
	case !labelValueRE.MatchString(value):
		return fieldErr(field, "value %q of label %q is not valid: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit", value, key)
	}
	return nil
}

// ValidateLabels checks a whole set of labels, keys in sorted order so the
// first bad one is always the same; field prefixes each key's field
// ("spec.labels" gives "spec.labels.rack").
func ValidateLabels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fieldErr(field, "a node has at most %d labels, got %d", MaxLabels, len(labels))
	}
	for _, k := range sortedLabelKeys(labels) {
		f := field + "." + k
		if err := ValidateLabelKey(f, k); err != nil {
			return err
		}
		if err := ValidateLabelValue(f, k, labels[k]); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a node patch: it must change something, and every label
// it sets or removes must be valid.
func (p *NodePatch) Validate() error {
	if len(p.Labels) == 0 && p.Unschedulable == nil {
		return fieldErr("", "the patch changes nothing: give labels (a value sets a label, null removes it) or unschedulable")
	}
	if len(p.Labels) > MaxLabels {
		return fieldErr("labels", "a patch changes at most %d labels, got %d", MaxLabels, len(p.Labels))
	}
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := "labels." + k
		if err := ValidateLabelKey(f, k); err != nil {
			return err
		}
		if v := p.Labels[k]; v != nil {
			if err := ValidateLabelValue(f, k, *v); err != nil {
				return err
			}
		}
	}
	if p.ResourceVersion != "" {
		if rv, err := strconv.ParseInt(p.ResourceVersion, 10, 64); err != nil || rv <= 0 {
			return fieldErr("resourceVersion", "%q is not a positive integer", p.ResourceVersion)
		}
	}
	return nil
}

// Apply changes spec as the patch says and reports whether anything
// changed. The resulting labels are checked against MaxLabels.
func (p *NodePatch) Apply(spec *NodeSpec) (changed bool, err error) {
	if p.Unschedulable != nil && *p.Unschedulable != spec.Unschedulable {
		spec.Unschedulable = *p.Unschedulable
		changed = true
	}
	for k, v := range p.Labels {
		old, had := spec.Labels[k]
		switch {
		case v == nil && had:
			delete(spec.Labels, k)
			changed = true
		case v != nil && (!had || old != *v):
			if spec.Labels == nil {
				spec.Labels = map[string]string{}
			}
			spec.Labels[k] = *v
			changed = true
		}
	}
	if len(spec.Labels) == 0 {
		spec.Labels = nil
	}
	if len(spec.Labels) > MaxLabels {
		return changed, fieldErr("labels", "a node has at most %d labels; this patch would give it %d", MaxLabels, len(spec.Labels))
	}
	return changed, nil
}

// Describe says what the patch does, for events: "rack=r1, zone removed,
// unschedulable".
func (p *NodePatch) Describe() string {
	var parts []string
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := p.Labels[k]; v != nil {
			parts = append(parts, k+"="+*v)
		} else {
			parts = append(parts, k+" removed")
		}
	}
	if p.Unschedulable != nil {
		if *p.Unschedulable {
			parts = append(parts, "unschedulable")
		} else {
			parts = append(parts, "schedulable")
		}
	}
	return strings.Join(parts, ", ")
}

func sortedLabelKeys(labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// FormatLabels writes labels as "k1=v1,k2=v2", keys sorted.
func FormatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range sortedLabelKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}
