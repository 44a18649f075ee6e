package deploytest

import (
	"io/fs"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
)

const (
	k8sDir = "deploy/k8s"
	// coreImage is the core's image repository.
	coreImage = "ghcr.io/larkway/larkway"
	// containerName is the core's container in the Deployment.
	containerName = "larkway"
	// configKey is the ConfigMap key (and file name) of the core config.
	configKey = "larkway.yaml"
	// httpShutdownBound is how long the core's ordered drain waits for its
	// HTTP server to finish (core/internal/app: srv.Shutdown, 10 s).
	httpShutdownBound = 10 * time.Second
	// defaultDrainTimeout is supervision.drain_timeout's default.
	defaultDrainTimeout = 30 * time.Second
	// minReplicas is the least an autoscaler may go to: a webhook must
	// always find a ready pod while another one drains.
	minReplicas = 2
	// dummySecret fills every *_env variable a shipped config names (the
	// admin token needs 16 characters or more).
	dummySecret = "deploytest-dummy-secret-value"
)

// wantCommand is the container's command (README: larkway serve --config).
var wantCommand = []string{"larkway", "serve", "--config", "/etc/larkway/" + configKey}

// wantAutoscaler is the autoscaler each known kustomization must use; a new
// overlay gets the generic checks (exactly one autoscaler of either kind).
var wantAutoscaler = map[string]string{
	"deploy/k8s/base":                "HorizontalPodAutoscaler",
	"deploy/k8s/overlays/production": "ScaledObject",
}

// kustomization is one kustomization.yaml under deploy/k8s.
type kustomization struct {
	dir string // repository-relative, slash-separated
	k   kusttypes.Kustomization
}

// TestKustomizations decodes every kustomization.yaml strictly, checks that
// every file it lists exists and that every file under deploy/k8s is listed
// by one, and decodes every manifest and patch file strictly.
func TestKustomizations(t *testing.T) {
	ks, manifests := loadKustomizations(t)
	if len(ks) == 0 {
		t.Fatalf("no kustomization.yaml under %s", k8sDir)
	}
	for dir := range wantAutoscaler {
		if !slices.ContainsFunc(ks, func(k kustomization) bool { return k.dir == dir }) {
			t.Errorf("%s/kustomization.yaml is missing", dir)
		}
	}
	for _, m := range manifests {
		objs := decodeStrict(t, m, readFile(t, m))
		if len(objs) == 0 {
			t.Errorf("%s: no Kubernetes object in it", m)
		}
	}
}

// loadKustomizations returns every kustomization under deploy/k8s and the
// manifest and patch files they list; problems are reported on t.
func loadKustomizations(t *testing.T) ([]kustomization, []string) {
	t.Helper()
	root := repoRoot(t)
	var files []string
	err := filepath.WalkDir(filepath.Join(root, k8sDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", k8sDir, err)
	}
	exists := func(rel string) (isFile, isDir bool) {
		for _, f := range files {
			if f == rel {
				return true, false
			}
			if strings.HasPrefix(f, rel+"/") {
				isDir = true
			}
		}
		return false, isDir
	}

	var ks []kustomization
	listed := map[string]bool{}
	var manifests []string
	for _, f := range files {
		base := path.Base(f)
		if base == "kustomization.yml" || base == "Kustomization" {
			t.Errorf("%s: name it kustomization.yaml", f)
			continue
		}
		if base != "kustomization.yaml" {
			continue
		}
		listed[f] = true
		dir := path.Dir(f)
		var k kusttypes.Kustomization
		if err := sigsyaml.UnmarshalStrict(readFile(t, f), &k); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
			t.Errorf("%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", f, k.APIVersion, k.Kind)
		}
		if len(k.Bases) > 0 || len(k.PatchesStrategicMerge) > 0 || len(k.PatchesJson6902) > 0 || len(k.Vars) > 0 ||
			len(k.ImageTags) > 0 || len(k.CommonLabels) > 0 {
			t.Errorf("%s: uses deprecated fields (bases, patchesStrategicMerge, patchesJson6902, vars, imageTags, commonLabels); use resources, patches, replacements, images, labels", f)
		}
		if len(k.SecretGenerator) > 0 {
			t.Errorf("%s: secretGenerator commits secret material; create the Secret out of band (deploy/README.md)", f)
		}
		if len(k.HelmCharts) > 0 || len(k.Generators) > 0 || len(k.Transformers) > 0 || len(k.Validators) > 0 {
			t.Errorf("%s: helm charts and plugin generators/transformers/validators are not rendered by these tests", f)
		}
		// ref checks that a listed path exists; kind is "resource" (file
		// or kustomization directory), "manifest" (a file decoded
		// strictly) or "data" (a generator input).
		ref := func(field, p, kind string) {
			if strings.Contains(p, "://") || strings.HasPrefix(p, "github.com/") {
				t.Errorf("%s: %s %q is remote; deploy/ must render offline from this repository", f, field, p)
				return
			}
			rel := path.Clean(path.Join(dir, p))
			isFile, isDir := exists(rel)
			switch {
			case isFile:
				listed[rel] = true
				if kind != "data" {
					manifests = append(manifests, rel)
				}
			case isDir && kind == "resource":
				if ok, _ := exists(rel + "/kustomization.yaml"); !ok {
					t.Errorf("%s: %s %q is a directory without kustomization.yaml", f, field, p)
				}
			default:
				t.Errorf("%s: %s %q does not exist", f, field, p)
			}
		}
		for _, r := range k.Resources {
			ref("resources", r, "resource")
		}
		for _, c := range k.Components {
			ref("components", c, "resource")
		}
		for _, c := range k.Crds {
			ref("crds", c, "data")
		}
		for _, c := range k.Configurations {
			ref("configurations", c, "data")
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				ref("patches", p.Path, "manifest")
			}
		}
		for _, g := range k.ConfigMapGenerator {
			for _, s := range g.FileSources {
				if _, p, ok := strings.Cut(s, "="); ok {
					s = p
				}
				ref("configMapGenerator files", s, "data")
			}
			for _, s := range g.EnvSources {
				ref("configMapGenerator envs", s, "data")
			}
		}
		ks = append(ks, kustomization{dir: dir, k: k})
	}
	for _, f := range files {
		if !listed[f] {
			t.Errorf("%s is not listed by any kustomization.yaml: deploy it or delete it", f)
		}
	}
	sort.Strings(manifests)
	return ks, slices.Compact(manifests)
}

// rendered is the output of `kustomize build` of one directory.
type rendered struct {
	dir             string
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]bool
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	scaledObjects   []*scaledObject
}

// render builds dir with kustomize (the library kubectl embeds) and
// decodes the result strictly.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	r := &rendered{dir: dir, configMaps: map[string]*corev1.ConfigMap{}, serviceAccounts: map[string]bool{}}
	for _, o := range decodeStrict(t, "kustomize build "+dir, build(t, dir)) {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, v)
		case *corev1.Service:
			r.services = append(r.services, v)
		case *corev1.ConfigMap:
			r.configMaps[v.Name] = v
		case *corev1.ServiceAccount:
			r.serviceAccounts[v.Name] = true
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, v)
		case *scaledObject:
			r.scaledObjects = append(r.scaledObjects, v)
		}
	}
	return r
}

// build renders dir with kustomize (the library kubectl embeds).
func build(t *testing.T, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), filepath.FromSlash(dir)))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return out
}

// TestRenderedManifests renders every kustomization of the core and checks
// that the objects agree with each other and with the core config they
// ship (the examples under deploy/k8s/examples have tests of their own).
func TestRenderedManifests(t *testing.T) {
	ks, _ := loadKustomizations(t)
	for _, k := range ks {
		if strings.HasPrefix(k.dir, examplesDir+"/") {
			continue
		}
		t.Run(strings.ReplaceAll(k.dir, "/", "_"), func(t *testing.T) {
			r := render(t, k.dir)
			if t.Failed() {
				return
			}
			checkRendered(t, r)
		})
	}
}

func checkRendered(t *testing.T, r *rendered) {
	if len(r.deployments) != 1 {
		t.Fatalf("%s renders %d Deployments, want 1 (the core)", r.dir, len(r.deployments))
	}
	dep := r.deployments[0]
	pod := &dep.Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == containerName })
	if i < 0 {
		t.Fatalf("Deployment %s has no container %q", dep.Name, containerName)
	}
	c := &pod.Containers[i]

	if !imagePinned(c.Image, coreImage) {
		t.Errorf("container image %q: want %s:<version> or @sha256:..., never :latest", c.Image, coreImage)
	}
	if got := append(slices.Clone(c.Command), c.Args...); !slices.Equal(got, wantCommand) {
		t.Errorf("container runs %q, want %q", got, wantCommand)
	}
	if pod.ServiceAccountName != "" && !r.serviceAccounts[pod.ServiceAccountName] {
		t.Errorf("pod uses ServiceAccount %q, which %s does not render", pod.ServiceAccountName, r.dir)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; dep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		t.Errorf("strategy: want RollingUpdate with maxUnavailable 0, so a release that cannot reach the bus or Redis stalls instead of removing serving pods (plugins are not part of readiness: deploy/README.md)")
	}

	cfg := shippedConfig(t, r, pod, c)
	if cfg == nil {
		return
	}
	checkSecrets(t, cfg, c)
	checkPorts(t, r, dep, c, cfg)
	checkGrace(t, pod, c, cfg)
	checkPlugins(t, pod, c, cfg)
	floor := checkAutoscaling(t, r, dep, cfg)
	checkPDB(t, r, dep, floor)
}

// imagePinned reports whether ref is repo:tag (not latest) or repo@sha256:.
func imagePinned(ref, repo string) bool {
	if repo != "" && !strings.HasPrefix(ref, repo+":") && !strings.HasPrefix(ref, repo+"@") {
		return false
	}
	if i := strings.Index(ref, "@sha256:"); i >= 0 {
		return regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(ref[i+len("@sha256:"):])
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	return colon > slash && ref[colon+1:] != "" && ref[colon+1:] != "latest"
}

// shippedConfig finds the ConfigMap mounted where the command reads its
// config and parses the file with the core's config package, after setting
// every environment variable it names to a dummy value.
func shippedConfig(t *testing.T, r *rendered, pod *corev1.PodSpec, c *corev1.Container) *config.Config {
	t.Helper()
	cfgPath := wantCommand[len(wantCommand)-1]
	var vol *corev1.Volume
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(cfgPath) {
			vol = findVolume(pod, m.Name)
		}
	}
	if vol == nil || vol.ConfigMap == nil {
		t.Errorf("no ConfigMap volume is mounted at %s, where the command reads its config", path.Dir(cfgPath))
		return nil
	}
	key := path.Base(cfgPath)
	for _, it := range vol.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	cm, ok := r.configMaps[vol.ConfigMap.Name]
	if !ok {
		t.Errorf("volume %s mounts ConfigMap %q, which %s does not render", vol.Name, vol.ConfigMap.Name, r.dir)
		return nil
	}
	text, ok := cm.Data[key]
	if !ok {
		t.Errorf("ConfigMap %s has no key %q", cm.Name, key)
		return nil
	}
	return parseConfig(t, "ConfigMap "+cm.Name+" "+key, text)
}

// parseConfig checks that the config carries no secret values and parses it
// with config.Parse, the core's own loader.
func parseConfig(t *testing.T, src, text string) *config.Config {
	t.Helper()
	var raw config.Config
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		t.Errorf("%s: %v", src, err)
		return nil
	}
	literal := func(field, v string) {
		if v != "" {
			t.Errorf("%s: %s holds a secret value; name an environment variable in %s_env instead", src, field, field)
		}
	}
	for i, a := range raw.Apps {
		literal("apps["+strconv.Itoa(i)+"].secret", a.Secret)
		literal("apps["+strconv.Itoa(i)+"].verification_token", a.VerificationToken)
		literal("apps["+strconv.Itoa(i)+"].encrypt_key", a.EncryptKey)
	}
	literal("admin.token", raw.Admin.Token)
	literal("redis.password", raw.Redis.Password)
	for _, name := range secretEnvs(&raw) {
		t.Setenv(name, dummySecret)
	}
	cfg, err := config.Parse(strings.NewReader(text))
	if err != nil {
		t.Errorf("%s: the core refuses this config: %v", src, err)
		return nil
	}
	return cfg
}

// secretEnvs lists the environment variables a config reads secrets from.
func secretEnvs(c *config.Config) []string {
	var out []string
	for _, a := range c.Apps {
		out = append(out, a.SecretEnv, a.VerificationTokenEnv, a.EncryptKeyEnv)
	}
	out = append(out, c.Admin.TokenEnv, c.Redis.PasswordEnv)
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}

// checkSecrets: every variable the config reads comes from a Secret by
// reference, never a literal value.
func checkSecrets(t *testing.T, cfg *config.Config, c *corev1.Container) {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("container env %s is set twice", e.Name)
		}
		env[e.Name] = e
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("container uses envFrom; name each secret variable with valueFrom.secretKeyRef")
	}
	for _, name := range secretEnvs(cfg) {
		e, ok := env[name]
		switch {
		case !ok:
			t.Errorf("the config reads %s but the container does not set it", name)
		case e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
			t.Errorf("env %s: must come from a Secret (valueFrom.secretKeyRef), not a value", name)
		case e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "":
			t.Errorf("env %s: secretKeyRef needs a name and a key", name)
		case e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional:
			t.Errorf("env %s: secretKeyRef must not be optional (the core refuses to start without it anyway)", name)
		}
	}
}

// checkPorts: the core listens on all interfaces on a container port, the
// probes hit /readyz and /healthz there, and the Services reach real ports.
func checkPorts(t *testing.T, r *rendered, dep *appsv1.Deployment, c *corev1.Container, cfg *config.Config) {
	byName := map[string]int32{}
	numbers := map[int32]bool{}
	for _, p := range c.Ports {
		if p.Name != "" {
			byName[p.Name] = p.ContainerPort
		}
		numbers[p.ContainerPort] = true
	}
	resolve := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			return byName[p.StrVal]
		}
		return p.IntVal
	}
	listenPort := func(field, addr string) int32 {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("config %s %q: %v", field, addr, err)
			return 0
		}
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("config %s %q: in a pod, listen on all interfaces (0.0.0.0)", field, addr)
		}
		n, _ := strconv.Atoi(port)
		if !numbers[int32(n)] {
			t.Errorf("config %s %q: port %d is not a container port", field, addr, n)
		}
		return int32(n)
	}
	main := listenPort("listen", cfg.Listen)
	if cfg.Admin.Listen != "" {
		listenPort("admin.listen", cfg.Admin.Listen)
	}
	probe := func(name string, p *corev1.Probe, wantPath string, required bool) {
		if p == nil {
			if required {
				t.Errorf("%s probe is missing; want GET %s on port %d", name, wantPath, main)
			}
			return
		}
		if p.HTTPGet == nil || p.HTTPGet.Path != wantPath || resolve(p.HTTPGet.Port) != main {
			t.Errorf("%s probe: want GET %s on the listen port %d", name, wantPath, main)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz", true)
	probe("liveness", c.LivenessProbe, "/healthz", true)
	probe("startup", c.StartupProbe, "/healthz", false)

	podLabels := dep.Spec.Template.Labels
	exposed := false
	for _, s := range r.services {
		if len(s.Spec.Selector) == 0 || !subset(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s: selector %v does not select the core's pods %v", s.Name, s.Spec.Selector, podLabels)
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			n := resolve(target)
			if !numbers[n] {
				t.Errorf("Service %s port %s: target %s is not a container port", s.Name, p.Name, target.String())
			}
			exposed = exposed || n == main
		}
	}
	if !exposed {
		t.Errorf("no Service exposes the listen port %d (webhooks)", main)
	}
}

// checkGrace: SIGTERM starts the ordered drain (not ready, stop HTTP, finish
// the deliveries in hand and their actions, drain plugins); the grace period
// must cover it, or replies in progress are cut off (and redelivered later).
func checkGrace(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, cfg *config.Config) {
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	var preStop time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	drain := cfg.Supervision.DrainTimeout.D()
	if drain == 0 {
		drain = defaultDrainTimeout
	}
	d := cfg.Dispatch
	need := preStop + httpShutdownBound + d.Deadline.D() + d.ActionTimeout.D() + drain
	if grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < %s: preStop %s + HTTP shutdown %s + dispatch.deadline %s + dispatch.action_timeout %s + supervision.drain_timeout %s",
			grace, need, preStop, httpShutdownBound, d.Deadline.D(), d.ActionTimeout.D(), drain)
	}
}

// checkPlugins: every enabled plugin is a file on an image volume, pinned
// by sha256 in the config.
func checkPlugins(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, cfg *config.Config) {
	if len(cfg.Plugins) == 0 {
		t.Errorf("the config runs no plugin")
	}
	for _, p := range cfg.Plugins {
		if p.Disabled {
			continue
		}
		if !path.IsAbs(p.Path) {
			t.Errorf("plugin %s: path %q must be absolute", p.Name, p.Path)
			continue
		}
		var mount *corev1.VolumeMount
		for i, m := range c.VolumeMounts {
			if strings.HasPrefix(p.Path, strings.TrimSuffix(m.MountPath, "/")+"/") && (mount == nil || len(m.MountPath) > len(mount.MountPath)) {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil {
			t.Errorf("plugin %s: %s is on no volume; ship plugins on an image volume", p.Name, p.Path)
			continue
		}
		v := findVolume(pod, mount.Name)
		switch {
		case v == nil || v.Image == nil:
			t.Errorf("plugin %s: volume %s is not an image volume", p.Name, mount.Name)
		case !imagePinned(v.Image.Reference, ""):
			t.Errorf("plugin %s: image volume reference %q: want a tag (not latest) or a digest", p.Name, v.Image.Reference)
		case !mount.ReadOnly:
			t.Errorf("plugin %s: mount %s read-only", p.Name, mount.MountPath)
		}
		if p.SHA256 == "" {
			t.Errorf("plugin %s: pin its sha256 in the config", p.Name)
		}
	}
}

// checkAutoscaling: exactly one autoscaler owns the Deployment's replicas
// and never goes below minReplicas; a ScaledObject scales on every
// configured (app, plugin) subscription. It returns the minimum.
func checkAutoscaling(t *testing.T, r *rendered, dep *appsv1.Deployment, cfg *config.Config) int32 {
	var kinds []string
	var floor int32
	for _, h := range r.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != dep.Name {
			t.Errorf("HorizontalPodAutoscaler %s targets %s %s %s, which %s does not render", h.Name, ref.APIVersion, ref.Kind, ref.Name, r.dir)
			continue
		}
		kinds = append(kinds, "HorizontalPodAutoscaler")
		floor = 1
		if h.Spec.MinReplicas != nil {
			floor = *h.Spec.MinReplicas
		}
		if h.Spec.MaxReplicas < floor {
			t.Errorf("HorizontalPodAutoscaler %s: maxReplicas %d < minReplicas %d", h.Name, h.Spec.MaxReplicas, floor)
		}
		if !slices.ContainsFunc(h.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool {
			return m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU
		}) {
			t.Errorf("HorizontalPodAutoscaler %s has no CPU metric", h.Name)
		}
	}
	for _, so := range r.scaledObjects {
		ref := so.Spec.ScaleTargetRef
		if ref == nil || ref.Name != dep.Name || (ref.Kind != "" && ref.Kind != "Deployment") || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
			t.Errorf("ScaledObject %s does not target Deployment %s", so.Name, dep.Name)
			continue
		}
		kinds = append(kinds, "ScaledObject")
		floor = checkScaledObject(t, so, cfg)
	}
	if len(kinds) != 1 {
		t.Errorf("%d autoscalers (%v) target Deployment %s, want exactly 1: two would fight over its replicas", len(kinds), kinds, dep.Name)
	} else if want, ok := wantAutoscaler[r.dir]; ok && kinds[0] != want {
		t.Errorf("%s scales with a %s, want a %s", r.dir, kinds[0], want)
	}
	if dep.Spec.Replicas != nil {
		t.Errorf("Deployment %s sets spec.replicas; leave it to the autoscaler (every apply would reset it)", dep.Name)
	}
	if floor < minReplicas {
		t.Errorf("the autoscaler may go down to %d replicas, want at least %d: a webhook must find a ready pod while another drains", floor, minReplicas)
	}
	return floor
}

func checkScaledObject(t *testing.T, so *scaledObject, cfg *config.Config) int32 {
	var floor int32 // KEDA's default: scale to zero
	if so.Spec.MinReplicaCount != nil {
		floor = *so.Spec.MinReplicaCount
	}
	if ceil := so.Spec.MaxReplicaCount; ceil != nil && *ceil < floor {
		t.Errorf("ScaledObject %s: maxReplicaCount %d < minReplicaCount %d", so.Name, *ceil, floor)
	}
	want := map[string]bool{}
	if cfg.Bus.Kind == "pulsar" {
		for _, a := range cfg.Apps {
			for _, p := range cfg.Plugins {
				if !p.Disabled {
					want[buspulsar.DefaultTopicPrefix+envelope.Topic(a.ID)+" "+dispatch.Subscription(p.Name)] = true
				}
			}
		}
	}
	got := map[string]bool{}
	names := map[string]bool{}
	hasCPU := false
	for i, tr := range so.Spec.Triggers {
		where := "ScaledObject " + so.Name + " trigger " + strconv.Itoa(i) + " (" + tr.Type + ")"
		if tr.Name != "" {
			if names[tr.Name] {
				t.Errorf("%s: name %q is used twice", where, tr.Name)
			}
			names[tr.Name] = true
		}
		allowed, ok := kedaTriggerMetadata[tr.Type]
		if !ok {
			t.Errorf("%s: trigger type not checked here; add its metadata keys to kedaTriggerMetadata", where)
			continue
		}
		for k := range tr.Metadata {
			if !allowed[k] {
				t.Errorf("%s: unknown metadata key %q (KEDA ignores it)", where, k)
			}
		}
		positive := func(key string, required bool) {
			v, ok := tr.Metadata[key]
			if !ok {
				if required {
					t.Errorf("%s: set %s", where, key)
				}
				return
			}
			if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 || (required && n == 0) {
				t.Errorf("%s: %s %q: want a positive integer", where, key, v)
			}
		}
		switch tr.Type {
		case "pulsar":
			if cfg.Bus.Kind != "pulsar" {
				t.Errorf("%s: the config's bus is %q, not pulsar", where, cfg.Bus.Kind)
			}
			if u, err := url.Parse(tr.Metadata["adminURL"]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Errorf("%s: adminURL %q: want the broker's http(s) admin URL", where, tr.Metadata["adminURL"])
			} else if strings.TrimRight(tr.Metadata["adminURL"], "/") != strings.TrimRight(cfg.Bus.Pulsar.AdminURL, "/") {
				t.Errorf("%s: adminURL %q is not the config's bus.pulsar.admin_url %q: KEDA and the core must read the same broker",
					where, tr.Metadata["adminURL"], cfg.Bus.Pulsar.AdminURL)
			}
			positive("msgBacklogThreshold", true)
			positive("activationMsgBacklogThreshold", false)
			key := tr.Metadata["topic"] + " " + tr.Metadata["subscription"]
			if got[key] {
				t.Errorf("%s: topic and subscription %s appear twice", where, key)
			}
			got[key] = true
			if !want[key] {
				t.Errorf("%s: topic and subscription %q belong to no (app, enabled plugin) of the config; KEDA would fail on a subscription that does not exist", where, key)
			}
		case "cpu":
			hasCPU = true
			if tr.MetricType != autoscalingv2.UtilizationMetricType && tr.MetricType != autoscalingv2.AverageValueMetricType {
				t.Errorf("%s: metricType %q: want Utilization or AverageValue", where, tr.MetricType)
			}
			positive("value", true)
		}
	}
	for key := range want {
		if !got[key] {
			t.Errorf("ScaledObject %s: no pulsar trigger for topic and subscription %s (every app × enabled plugin needs one)", so.Name, key)
		}
	}
	if !hasCPU {
		t.Errorf("ScaledObject %s: add a cpu trigger (it replaces the CPU HorizontalPodAutoscaler)", so.Name)
	}
	if so.Spec.Fallback != nil && len(want) == 0 {
		t.Errorf("ScaledObject %s: fallback needs a trigger other than cpu", so.Name)
	}
	return floor
}

// checkPDB: one PodDisruptionBudget covers the pods and lets drains proceed.
func checkPDB(t *testing.T, r *rendered, dep *appsv1.Deployment, floor int32) {
	var n int
	for _, p := range r.pdbs {
		if p.Spec.Selector == nil || len(p.Spec.Selector.MatchExpressions) > 0 || !subset(p.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) {
			t.Errorf("PodDisruptionBudget %s does not select the core's pods by matchLabels", p.Name)
			continue
		}
		n++
		switch {
		case p.Spec.MaxUnavailable != nil:
			if p.Spec.MaxUnavailable.Type == intstr.Int && p.Spec.MaxUnavailable.IntVal < 1 {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable 0 blocks every node drain", p.Name)
			}
		case p.Spec.MinAvailable != nil:
			if p.Spec.MinAvailable.Type == intstr.Int && p.Spec.MinAvailable.IntVal >= floor {
				t.Errorf("PodDisruptionBudget %s: minAvailable %d ≥ the autoscaler's minimum %d blocks node drains", p.Name, p.Spec.MinAvailable.IntVal, floor)
			}
		default:
			t.Errorf("PodDisruptionBudget %s: set maxUnavailable", p.Name)
		}
	}
	if n != 1 {
		t.Errorf("%d PodDisruptionBudgets cover the core's pods, want 1", n)
	}
}

func findVolume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
