// k8s-tools renders the kustomize overlays under kuberay/ and checks the core Kubernetes objects
// in them offline, without a cluster or kubectl.
//
//	k8s-tools render DIR     kustomize build DIR (sigs.k8s.io/kustomize/api/krusty), YAML on stdout
//	k8s-tools validate DIR   render DIR, then decode every object of a built-in kind strictly into
//	                         its k8s.io/api Go type (unknown or mistyped fields are errors); prints
//	                         one JSON report per object and exits 1 when any object fails
//
// Objects of the ray.io group are reported as "crd" and left to the CRD schemas (the Python test
// validates them with the KubeRay CRDs' openAPIV3Schema). Any other kind this program has no Go
// type for is an error, so a new kind in the manifests cannot go unchecked.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// newObject returns an empty Go object for a built-in apiVersion/kind, or nil when unknown.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "v1/LimitRange":
		return &corev1.LimitRange{}
	case "v1/ResourceQuota":
		return &corev1.ResourceQuota{}
	case "v1/Pod":
		return &corev1.Pod{}
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	// prometheus-operator's kinds, decoded into the operator's own Go types (kuberay/components/monitoring).
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	case "monitoring.coreos.com/v1/PodMonitor":
		return &monitoringv1.PodMonitor{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	}
	return nil
}

// Report is what validate prints for one rendered object (one JSON object per line).
type Report struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
	Check      string `json:"check"` // "strict" (decoded into a k8s.io/api type) or "crd"
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
}

func build(dir string) (resmap.ResMap, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	return k.Run(filesys.MakeFsOnDisk(), dir)
}

// checkStrict decodes one object's JSON into its Go type, refusing unknown fields, and checks the
// metadata a cluster would refuse too (a name that is not a DNS subdomain).
func checkStrict(raw []byte, obj any) error {
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return err
	}
	accessor, ok := obj.(metav1.Object)
	if !ok {
		return fmt.Errorf("decoded object has no metadata")
	}
	name := accessor.GetName()
	if name == "" || len(name) > 253 || strings.ToLower(name) != name {
		return fmt.Errorf("metadata.name %q is not a lowercase DNS subdomain", name)
	}
	return nil
}

func validate(dir string) (int, error) {
	resources, err := build(dir)
	if err != nil {
		return 0, err
	}
	failures := 0
	enc := json.NewEncoder(os.Stdout)
	for _, r := range resources.Resources() {
		rep := Report{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace()}
		raw, err := r.MarshalJSON()
		switch {
		case err != nil:
			rep.Check, rep.Error = "strict", err.Error()
		case strings.HasPrefix(rep.APIVersion, "ray.io/"):
			rep.Check, rep.OK = "crd", true
		default:
			rep.Check = "strict"
			obj := newObject(rep.APIVersion, rep.Kind)
			if obj == nil {
				rep.Error = fmt.Sprintf("no Go type known for %s %s: add it to k8s-tools or drop the object", rep.APIVersion, rep.Kind)
			} else if err := checkStrict(raw, obj); err != nil {
				rep.Error = err.Error()
			} else {
				rep.OK = true
			}
		}
		if !rep.OK {
			failures++
		}
		if err := enc.Encode(rep); err != nil {
			return failures, err
		}
	}
	return failures, nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: k8s-tools render DIR | k8s-tools validate DIR")
	os.Exit(2)
}

func main() {
	if len(os.Args) != 3 {
		usage()
	}
	dir := os.Args[2]
	switch os.Args[1] {
	case "render":
		resources, err := build(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8s-tools render:", err)
			os.Exit(1)
		}
		out, err := resources.AsYaml()
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8s-tools render:", err)
			os.Exit(1)
		}
		os.Stdout.Write(out)
	case "validate":
		failures, err := validate(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8s-tools validate:", err)
			os.Exit(1)
		}
		if failures > 0 {
			fmt.Fprintf(os.Stderr, "k8s-tools validate: %d object(s) failed\n", failures)
			os.Exit(1)
		}
	default:
		usage()
	}
}
