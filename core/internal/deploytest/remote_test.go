package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// examplesDir holds kustomizations that are not the core.
	examplesDir = "deploy/k8s/examples"
	// remotePluginDir is the remote plugin's example.
	remotePluginDir = examplesDir + "/remote-plugin"
	// pluginURIPrefix is how a plugin certificate names its plugin
	// (core/internal/remote.URIPrefix).
	pluginURIPrefix = "urn:larkway:plugin:"
	// imagesScript builds the images the manifests run.
	imagesScript = "scripts/images.sh"
	// kubeValidateScript installs kubernetes-validate into the venv.
	kubeValidateScript = "scripts/kubevalidate.sh"
	// schemaVersion is the Kubernetes version the manifests are validated
	// against (deploy/README.md: image volumes are on by default from 1.35).
	schemaVersion = "1.35.0"
)

// certificate is cert-manager's cert-manager.io/v1 Certificate, with the
// fields of its apis/certmanager/v1 CertificateSpec the manifests may use;
// cert-manager is not a dependency, so this copy lets them decode strictly.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		SecretName  string           `json:"secretName"`
		CommonName  string           `json:"commonName,omitempty"`
		Duration    *metav1.Duration `json:"duration,omitempty"`
		RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`
		DNSNames    []string         `json:"dnsNames,omitempty"`
		IPAddresses []string         `json:"ipAddresses,omitempty"`
		URIs        []string         `json:"uris,omitempty"`
		Usages      []string         `json:"usages,omitempty"`
		IsCA        bool             `json:"isCA,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			Encoding       string `json:"encoding,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// imageRepo is the registry path scripts/images.sh tags images under.
func imageRepo(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^REPO=\$\{LARKWAY_IMAGE_REPO:-(\S+)\}$`).FindSubmatch(readFile(t, imagesScript))
	if m == nil {
		t.Fatalf("%s: no REPO=${LARKWAY_IMAGE_REPO:-...} line", imagesScript)
	}
	return string(m[1])
}

// The remote plugin example: a Deployment serving the plugin with mutual
// TLS from a cert-manager Certificate that names it, a headless Service
// (each pod an instance), and a NetworkPolicy admitting only the core.
func TestRemotePluginExample(t *testing.T) {
	objs := decodeStrict(t, "kustomize build "+remotePluginDir, build(t, remotePluginDir))
	var deps []*appsv1.Deployment
	var svcs []*corev1.Service
	var pols []*networkingv1.NetworkPolicy
	certs := map[string]*certificate{} // by secret name
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			deps = append(deps, v)
		case *corev1.Service:
			svcs = append(svcs, v)
		case *networkingv1.NetworkPolicy:
			pols = append(pols, v)
		case *certificate:
			certs[v.Spec.SecretName] = v
		}
	}
	if len(deps) != 1 {
		t.Fatalf("%d Deployments, want the plugin's", len(deps))
	}
	dep := deps[0]
	plugin := dep.Name
	pod := &dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("plugin pod has %d containers, want 1", len(pod.Containers))
	}
	c := &pod.Containers[0]
	if !imagePinned(c.Image, imageRepo(t)+"/larkway-plugin-"+plugin) {
		t.Errorf("plugin image %q: want %s/larkway-plugin-%s (what %s builds) pinned to a tag or digest", c.Image, imageRepo(t), plugin, imagesScript)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("plugin pod must run as non-root")
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("plugin container must have a read-only root filesystem")
	}
	// Its flags name files in the mounted certificate Secret.
	flags := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[k] = v
	}
	for _, f := range []string{"listen", "tls-cert", "tls-key", "client-ca"} {
		if flags[f] == "" {
			t.Errorf("plugin args lack --%s=...", f)
		}
	}
	var secret string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(flags["tls-cert"], m.MountPath+"/") {
			if v := findVolume(pod, m.Name); v != nil && v.Secret != nil {
				secret = v.Secret.SecretName
			}
		}
	}
	cert := certs[secret]
	if cert == nil {
		t.Fatalf("--tls-cert %s is not in a Secret a Certificate writes (secret %q)", flags["tls-cert"], secret)
	}
	if !slices.Contains(cert.Spec.URIs, pluginURIPrefix+plugin) {
		t.Errorf("Certificate %s: uris %v lack %s%s, which the core requires", cert.Name, cert.Spec.URIs, pluginURIPrefix, plugin)
	}
	if !slices.Contains(cert.Spec.Usages, "server auth") {
		t.Errorf("Certificate %s: usages %v lack server auth", cert.Name, cert.Spec.Usages)
	}
	var core *certificate
	for _, ct := range certs {
		if ct != cert {
			core = ct
		}
	}
	if core == nil || !slices.Contains(core.Spec.Usages, "client auth") || core.Spec.IssuerRef != cert.Spec.IssuerRef {
		t.Errorf("the core's Certificate must be for client auth from the plugin's issuer: %+v", core)
	}
	// The port the plugin listens on is the headless Service's, selecting its pods.
	_, port, _ := strings.Cut(flags["listen"], ":")
	var headless *corev1.Service
	for _, s := range svcs {
		if s.Name == plugin {
			headless = s
		}
	}
	switch {
	case headless == nil:
		t.Errorf("no Service %s", plugin)
	case headless.Spec.ClusterIP != corev1.ClusterIPNone:
		t.Errorf("Service %s must be headless (clusterIP: None): each pod is an instance the core dials", plugin)
	case !subset(headless.Spec.Selector, dep.Spec.Template.Labels):
		t.Errorf("Service %s selects %v, not the plugin's pods", plugin, headless.Spec.Selector)
	case len(headless.Spec.Ports) != 1 || headless.Spec.Ports[0].TargetPort.String() != c.Ports[0].Name || port != "7443" ||
		c.Ports[0].ContainerPort != 7443:
		t.Errorf("Service %s port %v does not reach --listen %s", plugin, headless.Spec.Ports, flags["listen"])
	}
	// Only the core may reach the plugin.
	if len(pols) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(pols))
	}
	pol := pols[0]
	if !subset(pol.Spec.PodSelector.MatchLabels, dep.Spec.Template.Labels) || len(pol.Spec.Ingress) != 1 {
		t.Fatalf("NetworkPolicy %s must select the plugin's pods with one ingress rule", pol.Name)
	}
	for _, from := range pol.Spec.Ingress[0].From {
		if from.PodSelector == nil || from.PodSelector.MatchLabels["app.kubernetes.io/name"] != "larkway" || from.NamespaceSelector == nil {
			t.Errorf("NetworkPolicy %s admits %+v, want only the core's pods", pol.Name, from)
		}
	}
}

// The Containerfiles build what deploy/ runs: every image FROM scratch
// (the Python base from a root filesystem added in), nothing RUN (no shell
// needed to build, none in the core or Go plugin images), non-root; and
// the core's Deployment runs the image scripts/images.sh tags.
func TestContainerfiles(t *testing.T) {
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "images", "*.Containerfile"))
	if err != nil || len(files) != 3 {
		t.Fatalf("images/*.Containerfile: %v %v, want core, go-plugin and python-base", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		var from, user []string
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
				continue
			}
			switch strings.ToUpper(fields[0]) {
			case "FROM":
				from = append(from, fields[1])
			case "USER":
				user = append(user, fields[1])
			case "RUN":
				t.Errorf("%s: RUN %s: images are assembled without running anything in them", name, strings.Join(fields[1:], " "))
			}
		}
		if !slices.Equal(from, []string{"scratch"}) {
			t.Errorf("%s: FROM %v, want scratch only", name, from)
		}
		if len(user) != 1 || user[0] != "65532:65532" {
			t.Errorf("%s: USER %v, want 65532:65532 (the Deployments' runAsUser)", name, user)
		}
	}
	if want := imageRepo(t) + "/larkway"; want != coreImage {
		t.Errorf("%s tags the core %s, but the manifests run %s", imagesScript, want, coreImage)
	}
}

// kubeValidate is the venv's kubernetes-validate (scripts/kubevalidate.sh
// installs it; `make test` runs that first).
func kubeValidate(t *testing.T) string {
	t.Helper()
	env := os.Getenv("LARKWAY_PYENV")
	if env == "" {
		env = ".tools/pyenv"
	}
	if !filepath.IsAbs(env) {
		env = filepath.Join(repoRoot(t), env)
	}
	bin := filepath.Join(env, "bin", "kubernetes-validate")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kubernetes-validate is not installed in %s: run %s (make test does)", env, kubeValidateScript)
	}
	return bin
}

// Every kustomization renders to objects that validate against the
// Kubernetes schemas (schemaVersion), offline and strictly (unknown fields refused).
// Custom resources (KEDA, cert-manager) have no schema there: the strict
// decoders of newObject check them.
func TestManifestsMatchKubernetesSchemas(t *testing.T) {
	bin := kubeValidate(t)
	ks, _ := loadKustomizations(t)
	for _, k := range ks {
		t.Run(strings.ReplaceAll(k.dir, "/", "_"), func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "rendered.yaml")
			if err := os.WriteFile(f, build(t, k.dir), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--strict", "--no-warn", "-k", schemaVersion, f).CombinedOutput()
			if err != nil {
				t.Fatalf("kubernetes-validate %s: %v\n%s", k.dir, err, out)
			}
		})
	}
}
