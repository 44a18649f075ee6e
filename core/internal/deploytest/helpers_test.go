package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/larkway/larkway/core/internal/testenv"
)

// repoRoot is the repository root; every path in these tests is relative
// to it.
func repoRoot(t *testing.T) string {
	t.Helper()
	return testenv.ModuleRoot(t)
}

// readFile reads a repository file.
func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("reading %s: %v", rel, err)
	}
	return b
}

// object is one decoded Kubernetes object.
type object struct {
	where string // file and document, for messages
	obj   any    // *appsv1.Deployment, *corev1.Service, ..., *scaledObject
}

// newObject returns an empty value of the Go type for apiVersion and kind.
// Only kinds deploy/ is meant to contain are listed: anything else (a
// Secret above all) is an error.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "keda.sh/v1alpha1 ScaledObject":
		return &scaledObject{}, true
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "cert-manager.io/v1 Certificate":
		return &certificate{}, true
	}
	return nil, false
}

// decodeStrict decodes every YAML document in b into its API type with
// unknown and duplicate fields refused (sigs.k8s.io/yaml.UnmarshalStrict:
// the YAML becomes JSON, decoded with DisallowUnknownFields). Problems are
// reported on t; the objects that decoded are returned.
func decodeStrict(t *testing.T, src string, b []byte) []object {
	t.Helper()
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var objs []object
	for i := 0; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: reading YAML document %d: %v", src, i, err)
			break
		}
		var fields map[string]any
		if err := sigsyaml.Unmarshal(raw, &fields); err != nil {
			t.Errorf("%s: document %d is not YAML: %v", src, i, err)
			continue
		}
		if len(fields) == 0 {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(raw, &tm); err != nil || tm.APIVersion == "" || tm.Kind == "" {
			t.Errorf("%s: document %d has no apiVersion and kind (%v)", src, i, err)
			continue
		}
		where := fmt.Sprintf("%s: document %d (%s %s)", src, i, tm.APIVersion, tm.Kind)
		if tm.Kind == "Secret" {
			t.Errorf("%s: secrets are never committed; create the Secret out of band (deploy/README.md)", where)
			continue
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			t.Errorf("%s: no strict decoder for this kind; add its Go type to newObject", where)
			continue
		}
		if err := sigsyaml.UnmarshalStrict(raw, obj); err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if m, ok := obj.(metav1.Object); ok {
			where = fmt.Sprintf("%s %q", where, m.GetName())
		}
		objs = append(objs, object{where: where, obj: obj})
	}
	return objs
}
