// Package deploytest checks deploy/ as part of `make test`; it has tests
// only. Files are read relative to the repository root.
//
//   - Every Kubernetes manifest (and every kustomize render of
//     deploy/k8s/base and its overlays) decodes strictly into the Kubernetes
//     API types, unknown fields refused; the KEDA ScaledObject, a CRD, into
//     a strict copy of the fields KEDA v2 defines.
//   - Each kustomization lists only files that exist, and no file is left
//     out of every kustomization.
//   - The core config each render ships in its ConfigMap parses with the
//     core's own config package, and the objects agree with it: command and
//     mount path, probes on the listen port, secrets only by reference, a
//     grace period that covers the ordered drain, plugins on an image volume
//     with pinned sha256, one autoscaler, KEDA triggers for exactly the
//     configured (app, plugin) subscriptions.
//   - The alert rules and the Prometheus config pass promtool (check config,
//     check rules, test rules); promtool must be installed
//     (scripts/promtool.sh), the tests fail without it.
//   - The Grafana dashboards are valid, and every metric the rules and
//     dashboards name is registered by a real core started in-process.
//   - Every render validates offline against the Kubernetes schemas with
//     kubernetes-validate (installed into the venv by
//     scripts/kubevalidate.sh; the tests fail without it); the remote plugin
//     example (deploy/k8s/examples/remote-plugin) is consistent (Certificate
//     naming the plugin, headless Service, NetworkPolicy admitting the
//     core); the Containerfiles under images/ are FROM scratch, RUN nothing
//     and run as 65532.
//
// This package lives under core/internal so it may use the core's config
// and app packages. It is a module of its own (in go.work) so that what only
// these tests need (Kubernetes API types, kustomize, the Prometheus server's
// parsers) stays out of the core's go.mod.
package deploytest
