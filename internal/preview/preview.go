package preview

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// templatePaths says where each workload kind keeps its pod template, as a
// JSON pointer ("" is the object itself, for a Pod).
var templatePaths = map[string]string{
	"Pod":         "",
	"Deployment":  "/spec/template",
	"StatefulSet": "/spec/template",
	"DaemonSet":   "/spec/template",
	"ReplicaSet":  "/spec/template",
	"Job":         "/spec/template",
	"CronJob":     "/spec/jobTemplate/spec/template",
}

// Options configure Preview.
type Options struct {
	Mutation *webhook.Options // validated
	// Namespace is used for objects that name none.
	Namespace string
	// ServiceAccountAnnotations stand in for the ServiceAccount lookup:
	// every pod's ServiceAccount is taken to carry them.
	ServiceAccountAnnotations map[string]string
}

// Preview reads Pods and workloads as YAML (several documents allowed) and
// writes them to w as the webhook would admit them: opted-in pod templates
// mutated, everything else unchanged. Denials are written to errw, one line
// per object, exactly as the webhook words them; the error says how many.
// The admission warnings of an admitted object go to errw too, a line each.
func Preview(r io.Reader, w, errw io.Writer, o Options) error {
	dec := utilyaml.NewYAMLReader(bufio.NewReader(r))
	denied, first := 0, true
	for i := 1; ; i++ {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isOnlyComments(doc) {
			continue
		}
		out, desc, warnings, err := previewDocument(doc, o)
		var d *webhook.Denial
		switch {
		case errors.As(err, &d):
			denied++
			fmt.Fprintf(errw, "%s: denied: %v\n", desc, err)
			continue
		case err != nil:
			return fmt.Errorf("document %d: %w", i, err)
		}
		for _, w := range warnings {
			fmt.Fprintf(errw, "%s: warning: %s\n", desc, w)
		}
		if !first {
			io.WriteString(w, "---\n")
		}
		first = false
		w.Write(out)
	}
	if denied > 0 {
		return fmt.Errorf("%d object(s) denied", denied)
	}
	return nil
}

func isOnlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// previewDocument applies to one document's pod template the JSON patch the
// webhook would answer with, so the preview is what the cluster admits.
func previewDocument(doc []byte, o Options) (out []byte, desc string, warnings []string, err error) {
	raw, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, "", nil, fmt.Errorf("parse YAML: %w", err)
	}
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, "", nil, fmt.Errorf("parse object: %w", err)
	}
	desc = head.Kind + "/" + head.Metadata.Name
	ptr, ok := templatePaths[head.Kind]
	if !ok {
		// Services, ConfigMaps and the like pass through, so that a whole
		// kustomize build can be previewed.
		return doc, desc, nil, nil
	}
	tmplJSON, err := jsonAt(raw, ptr)
	if err != nil {
		return nil, desc, nil, fmt.Errorf("%s: %w", desc, err)
	}
	var tmpl corev1.PodTemplateSpec
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(tmplJSON, &tmpl); err != nil {
		return nil, desc, nil, fmt.Errorf("%s: decode pod template: %w", desc, err)
	}
	if tmpl.Labels[spec.LabelInject] != "true" {
		// The webhook's objectSelector never sends this pod.
		return doc, desc, nil, nil
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = o.Namespace
	}
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	sa := webhook.ServiceAccount{Namespace: ns, Name: saName, Annotations: o.ServiceAccountAnnotations}
	adm, err := webhook.Admit(pod, sa, o.Mutation)
	if err != nil {
		return nil, desc, nil, err
	}
	ops, warnings := adm.Patch, adm.Warnings
	if len(ops) == 0 {
		return doc, desc, warnings, nil
	}
	// The same operations the webhook answers with, under the template's path.
	for i := range ops {
		ops[i].Path = ptr + ops[i].Path
	}
	patchJSON, err := webhook.EncodePatch(ops)
	if err != nil {
		return nil, desc, nil, err
	}
	patch, err := jsonpatchapply.DecodePatch(patchJSON)
	if err != nil {
		return nil, desc, nil, fmt.Errorf("%s: decode patch: %w", desc, err)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		return nil, desc, nil, fmt.Errorf("%s: apply patch: %w", desc, err)
	}
	out, err = yaml.JSONToYAML(patched)
	if err != nil {
		return nil, desc, nil, err
	}
	return out, desc, warnings, nil
}

// jsonAt returns the value at a JSON pointer made of plain keys.
func jsonAt(doc []byte, ptr string) ([]byte, error) {
	if ptr == "" {
		return doc, nil
	}
	cur := doc
	for _, key := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(cur, &m); err != nil {
			return nil, fmt.Errorf("no pod template at %s", ptr)
		}
		next, ok := m[key]
		if !ok {
			return nil, fmt.Errorf("no pod template at %s", ptr)
		}
		cur = next
	}
	return cur, nil
}
