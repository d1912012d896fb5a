package charttest

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
)

// imageUID is the nonroot user of the distroless image the Dockerfile builds.
const imageUID = 65532

// sensitiveEnv are the service's variables that carry secrets. They may reach the pod
// only through secretKeyRef, never as a plain value or through the ConfigMap.
var sensitiveEnv = []string{
	"TOKENSVC_ADMIN_TOKEN",
	"TOKENSVC_MASTER_KEY",
	"VAULT_TOKEN",
	"TOKENSVC_VAULT_SECRET_ID",
	"TOKENSVC_VAULT_ROLE_ID",
}

// defaultServiceAccountTokenFile is where the kubelet mounts the automounted API token.
const defaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// install is what the security checks look at: the pod, its settings and the values.
type install struct {
	objects
	pod      corev1.PodSpec
	settings map[string]string // the ConfigMap the pod reads its environment from
	values   chartutil.Values
}

// forEachInstall renders the chart with each values case and runs check on what it
// installs, as a subtest named after the case.
func forEachInstall(t *testing.T, check func(t *testing.T, in install)) {
	c := mustLoadChart(t)
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			r := mustRender(t, c, vc)
			o := mustDecode(t, r)
			check(t, install{objects: o, pod: o.deployment.Spec.Template.Spec, settings: o.configMap.Data, values: r.values})
		})
	}
}

func (in install) str(tb testing.TB, p string) string {
	tb.Helper()
	s, _ := valueAt(tb, in.values, p).(string)
	return s
}

func (in install) kubernetesAuth(tb testing.TB) bool {
	return in.str(tb, "store") == "vault" && in.str(tb, "vault.auth.method") == "kubernetes"
}

// TestDeploymentSecurity asserts the hardening of the rendered Deployment for the
// defaults and every ci/*-values.yaml: nothing a values file can switch off.
func TestDeploymentSecurity(t *testing.T) {
	checks := []struct {
		name  string
		check func(tb testing.TB, in install)
	}{
		{"pod security context", checkPodSecurityContext},
		{"container security context", checkContainerSecurityContexts},
		{"no host namespaces or paths", checkNoHostAccess},
		{"service account token only for Vault kubernetes auth", checkServiceAccountToken},
		{"termination grace exceeds drain", checkGracefulTermination},
		{"resources", checkResources},
		{"probes", checkProbes},
		{"secrets only by reference", checkSecretsByReference},
		{"image", checkImage},
	}
	forEachInstall(t, func(t *testing.T, in install) {
		for _, ck := range checks {
			t.Run(ck.name, func(t *testing.T) { ck.check(t, in) })
		}
	})
}

func allContainers(pod corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(pod.InitContainers), pod.Containers...)
}

func checkPodSecurityContext(tb testing.TB, in install) {
	psc := in.pod.SecurityContext
	if psc == nil {
		tb.Fatal("got no pod securityContext, want one")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		tb.Errorf("pod runAsNonRoot: got %v, want true", deref(psc.RunAsNonRoot))
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != imageUID {
		tb.Errorf("pod runAsUser: got %v, want %d", deref(psc.RunAsUser), imageUID)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		tb.Errorf("pod seccompProfile: got %+v, want RuntimeDefault", psc.SeccompProfile)
	}
}

func checkContainerSecurityContexts(tb testing.TB, in install) {
	for _, ctr := range allContainers(in.pod) {
		sc := ctr.SecurityContext
		if sc == nil {
			tb.Errorf("container %s: got no securityContext, want one", ctr.Name)
			continue
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			tb.Errorf("container %s runAsNonRoot: got %v, want true", ctr.Name, deref(sc.RunAsNonRoot))
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != imageUID {
			tb.Errorf("container %s runAsUser: got %v, want %d", ctr.Name, deref(sc.RunAsUser), imageUID)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			tb.Errorf("container %s readOnlyRootFilesystem: got %v, want true", ctr.Name, deref(sc.ReadOnlyRootFilesystem))
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			tb.Errorf("container %s allowPrivilegeEscalation: got %v, want false", ctr.Name, deref(sc.AllowPrivilegeEscalation))
		}
		if sc.Privileged != nil && *sc.Privileged {
			tb.Errorf("container %s privileged: got true, want false", ctr.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			tb.Errorf("container %s capabilities: got %+v, want drop [ALL]", ctr.Name, sc.Capabilities)
		} else if len(sc.Capabilities.Add) > 0 {
			tb.Errorf("container %s capabilities add: got %v, want none", ctr.Name, sc.Capabilities.Add)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			tb.Errorf("container %s seccompProfile: got %+v, want RuntimeDefault", ctr.Name, sc.SeccompProfile)
		}
	}
}

func checkNoHostAccess(tb testing.TB, in install) {
	if in.pod.HostNetwork || in.pod.HostPID || in.pod.HostIPC {
		tb.Errorf("hostNetwork/hostPID/hostIPC: got %v/%v/%v, want all false", in.pod.HostNetwork, in.pod.HostPID, in.pod.HostIPC)
	}
	for _, v := range in.pod.Volumes {
		if v.HostPath != nil {
			tb.Errorf("volume %s: got hostPath %s, want none", v.Name, v.HostPath.Path)
		}
	}
	for _, ctr := range allContainers(in.pod) {
		for _, p := range ctr.Ports {
			if p.HostPort != 0 {
				tb.Errorf("container %s port %s: got hostPort %d, want none", ctr.Name, p.Name, p.HostPort)
			}
		}
	}
}

// checkServiceAccountToken: the API token is mounted only when Vault Kubernetes auth
// needs it, and then the file the service reads is really there (automounted, or a
// projected token bound to the configured audience).
func checkServiceAccountToken(tb testing.TB, in install) {
	automount := in.pod.AutomountServiceAccountToken
	if automount == nil {
		tb.Fatal("automountServiceAccountToken: got unset (the cluster default, true), want it explicit")
	}
	projected := projectedTokenVolumes(in.pod)
	if !in.kubernetesAuth(tb) {
		if *automount {
			tb.Errorf("automountServiceAccountToken: got true with store %q and vault auth %q, want false", in.str(tb, "store"), in.str(tb, "vault.auth.method"))
		}
		if len(projected) > 0 {
			tb.Errorf("got projected service account token volumes %v without Vault kubernetes auth, want none", projected)
		}
		return
	}
	file := in.settings["TOKENSVC_VAULT_K8S_TOKEN_FILE"]
	audience := in.str(tb, "vault.auth.kubernetes.tokenAudience")
	if audience == "" {
		if !*automount || file != defaultServiceAccountTokenFile {
			tb.Errorf("kubernetes auth: got automount %v and token file %q, want true and %q", *automount, file, defaultServiceAccountTokenFile)
		}
		return
	}
	if *automount {
		tb.Errorf("automountServiceAccountToken: got true with a projected Vault token, want false")
	}
	dir, base := path.Split(file)
	mountedAt := map[string]string{}
	for _, ctr := range in.pod.Containers {
		for _, m := range ctr.VolumeMounts {
			mountedAt[m.Name] = m.MountPath
		}
	}
	for name, src := range projected {
		if path.Clean(mountedAt[name]) == path.Clean(dir) && src.Path == base {
			if src.Audience != audience {
				tb.Errorf("projected token audience: got %q, want %q", src.Audience, audience)
			}
			return
		}
	}
	tb.Errorf("token file %s: got no projected service account token mounted there (volumes %v)", file, projected)
}

func projectedTokenVolumes(pod corev1.PodSpec) map[string]corev1.ServiceAccountTokenProjection {
	out := map[string]corev1.ServiceAccountTokenProjection{}
	for _, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				out[v.Name] = *s.ServiceAccountToken
			}
		}
	}
	return out
}

// checkGracefulTermination: Kubernetes waits terminationGracePeriodSeconds from the
// start of the preStop hook; the service's drain only begins after it.
func checkGracefulTermination(tb testing.TB, in install) {
	drain, err := time.ParseDuration(in.settings["TOKENSVC_SHUTDOWN_TIMEOUT"])
	if err != nil {
		tb.Fatalf("TOKENSVC_SHUTDOWN_TIMEOUT: %v", err)
	}
	if want := time.Duration(mustInt(tb, in.values, "config.shutdownTimeoutSeconds")) * time.Second; drain != want {
		tb.Errorf("TOKENSVC_SHUTDOWN_TIMEOUT: got %v, want %v", drain, want)
	}
	var preStop time.Duration
	for _, ctr := range in.pod.Containers {
		if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
			preStop = max(preStop, time.Duration(ctr.Lifecycle.PreStop.Sleep.Seconds)*time.Second)
		}
	}
	if in.pod.TerminationGracePeriodSeconds == nil {
		tb.Fatal("terminationGracePeriodSeconds: got unset, want it above the drain time")
	}
	grace := time.Duration(*in.pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= drain+preStop {
		tb.Errorf("terminationGracePeriodSeconds: got %v, want more than preStop %v + drain %v", grace, preStop, drain)
	}
}

func checkResources(tb testing.TB, in install) {
	for _, ctr := range allContainers(in.pod) {
		res := ctr.Resources
		for _, want := range []struct {
			kind string
			list corev1.ResourceList
			name corev1.ResourceName
		}{
			{"requests", res.Requests, corev1.ResourceCPU},
			{"requests", res.Requests, corev1.ResourceMemory},
			{"limits", res.Limits, corev1.ResourceMemory},
		} {
			q, ok := want.list[want.name]
			if !ok || q.IsZero() {
				tb.Errorf("container %s %s.%s: got %v, want a positive quantity", ctr.Name, want.kind, want.name, q.String())
			}
		}
		if lim, ok := res.Limits[corev1.ResourceMemory]; ok && lim.Cmp(res.Requests[corev1.ResourceMemory]) < 0 {
			tb.Errorf("container %s memory: got limit %v below request %v", ctr.Name, lim.String(), res.Requests.Memory().String())
		}
	}
}

func checkProbes(tb testing.TB, in install) {
	ctr := in.pod.Containers[0]
	scheme := corev1.URISchemeHTTP
	if valueAt(tb, in.values, "tls.enabled").(bool) {
		scheme = corev1.URISchemeHTTPS
	}
	wantReadiness := in.str(tb, "probes.readiness.path")
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", ctr.StartupProbe, "/healthz"},
		{"liveness", ctr.LivenessProbe, "/healthz"},
		{"readiness", ctr.ReadinessProbe, wantReadiness},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			tb.Errorf("%s probe: got %+v, want an HTTP GET", p.kind, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			tb.Errorf("%s probe path: got %q, want %q", p.kind, g.Path, p.path)
		}
		if g.Scheme != scheme {
			tb.Errorf("%s probe scheme: got %q, want %q", p.kind, g.Scheme, scheme)
		}
		if got := containerPort(ctr, g.Port.String()); got != 8080 {
			tb.Errorf("%s probe port %s: got container port %d, want 8080", p.kind, g.Port.String(), got)
		}
	}
	if wantReadiness != "/readyz" && wantReadiness != "/healthz" {
		tb.Errorf("probes.readiness.path: got %q, want /readyz or /healthz", wantReadiness)
	}
}

func containerPort(ctr corev1.Container, port string) int32 {
	for _, p := range ctr.Ports {
		if p.Name == port || port == strconv.Itoa(int(p.ContainerPort)) {
			return p.ContainerPort
		}
	}
	return 0
}

// checkSecretsByReference: every secret-carrying variable comes from a secretKeyRef,
// never a literal value and never the ConfigMap, and the admin token is always set so
// the service never generates one and prints it into the pod log.
func checkSecretsByReference(tb testing.TB, in install) {
	for _, name := range sensitiveEnv {
		if _, ok := in.settings[name]; ok {
			tb.Errorf("ConfigMap: got %s, want secrets only through secretKeyRef", name)
		}
	}
	haveAdmin := false
	for _, ctr := range allContainers(in.pod) {
		for _, e := range ctr.Env {
			if !slices.Contains(sensitiveEnv, e.Name) {
				continue
			}
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				tb.Errorf("container %s env %s: got value %q valueFrom %+v, want only valueFrom.secretKeyRef", ctr.Name, e.Name, e.Value, e.ValueFrom)
				continue
			}
			if ref := e.ValueFrom.SecretKeyRef; ref.Name == "" || ref.Key == "" {
				tb.Errorf("container %s env %s: got secretKeyRef %+v, want a name and a key", ctr.Name, e.Name, ref)
			}
			if e.Name == "TOKENSVC_ADMIN_TOKEN" {
				haveAdmin = true
			}
		}
		for _, ef := range ctr.EnvFrom {
			if ef.ConfigMapRef == nil {
				tb.Errorf("container %s envFrom: got %+v, want only the settings ConfigMap", ctr.Name, ef)
			}
		}
	}
	if !haveAdmin {
		tb.Error("TOKENSVC_ADMIN_TOKEN: got none, want it from a Secret (else the service prints a generated token to the log)")
	}
	// Files that hold secrets come from Secret or projected volumes, mounted read-only.
	for _, ctr := range allContainers(in.pod) {
		for _, m := range ctr.VolumeMounts {
			for _, v := range in.pod.Volumes {
				if v.Name == m.Name && (v.Secret != nil || v.Projected != nil) && !m.ReadOnly {
					tb.Errorf("volume %s at %s: got writable, want readOnly", m.Name, m.MountPath)
				}
			}
		}
	}
}

func checkImage(tb testing.TB, in install) {
	for _, ctr := range allContainers(in.pod) {
		if ctr.Image == "" || strings.HasSuffix(ctr.Image, ":latest") || !strings.ContainsAny(ctr.Image, ":@") {
			tb.Errorf("container %s image: got %q, want a pinned tag or digest", ctr.Name, ctr.Image)
		}
		if ctr.ImagePullPolicy == "" {
			tb.Errorf("container %s imagePullPolicy: got empty, want it explicit", ctr.Name)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}
