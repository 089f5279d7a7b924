package e2e

import (
	"errors"
	"io"
	"os"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
		ServiceName              string `yaml:"serviceName"`
		Replicas                 int    `yaml:"replicas"`
		PodManagementPolicy      string `yaml:"podManagementPolicy"`
		MaxUnavailable           int    `yaml:"maxUnavailable"`
		Template                 struct {
			Spec struct {
				Containers []struct {
					Name string `yaml:"name"`
					Env  []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom struct {
							FieldRef struct {
								FieldPath string `yaml:"fieldPath"`
							} `yaml:"fieldRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					Ports []struct {
						ContainerPort int    `yaml:"containerPort"`
						Protocol      string `yaml:"protocol"`
					} `yaml:"ports"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

// deploy/kubernetes/baton.yaml is never applied here (no cluster); this checks it
// against what the servers need to form a cluster, as docs/deployment.md explains:
// a headless Service that lists pods before they are ready, a StatefulSet of
// BATON_BOOTSTRAP_EXPECT pods started in parallel, each with its own volume at
// BATON_STATE_DIR and its pod name as node name, seeds pointing at the Service, a
// disruption budget that keeps a quorum, and only variables the binaries read.
func TestKubernetesManifest(t *testing.T) {
	f, err := os.Open("../deploy/kubernetes/baton.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(f)
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	svc, ok := objs["Service/baton-server"]
	if !ok || svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("want a headless Service baton-server with publishNotReadyAddresses: %+v", svc.Spec)
	}
	sts, ok := objs["StatefulSet/baton-server"]
	if !ok {
		t.Fatalf("no StatefulSet baton-server in %v", objs)
	}
	if sts.Spec.ServiceName != "baton-server" || sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("StatefulSet: serviceName %q, podManagementPolicy %q; want baton-server and Parallel", sts.Spec.ServiceName, sts.Spec.PodManagementPolicy)
	}
	env := checkEnv(t, "server", sts, cli.Known(&server.Config{}))
	if env["BATON_BOOTSTRAP_EXPECT"] != strconv.Itoa(sts.Spec.Replicas) {
		t.Errorf("BATON_BOOTSTRAP_EXPECT %q, want the replicas' number %d", env["BATON_BOOTSTRAP_EXPECT"], sts.Spec.Replicas)
	}
	if env["BATON_NODE_NAME"] != "fieldRef:metadata.name" {
		t.Errorf("server BATON_NODE_NAME %q, want the pod's name (fieldRef metadata.name)", env["BATON_NODE_NAME"])
	}
	c := sts.Spec.Template.Spec.Containers[0]
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range sts.Spec.VolumeClaimTemplates {
			mounted = mounted || m.Name == v.Metadata.Name && m.MountPath == env["BATON_STATE_DIR"]
		}
	}
	if !mounted {
		t.Errorf("no volumeClaimTemplate mounted at BATON_STATE_DIR %q", env["BATON_STATE_DIR"])
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[strconv.Itoa(p.ContainerPort)+"/"+p.Protocol] = true
	}
	for _, want := range []string{"7000/", "7001/", "7946/TCP", "7946/UDP", "8080/"} {
		if !ports[want] {
			t.Errorf("server container does not declare port %s", want)
		}
	}
	if pdb := objs["PodDisruptionBudget/baton-server"]; pdb.Spec.MaxUnavailable < 1 || pdb.Spec.MaxUnavailable > (sts.Spec.Replicas-1)/2 {
		t.Errorf("PodDisruptionBudget maxUnavailable %d: want 1 to %d, so that a quorum of %d stays", pdb.Spec.MaxUnavailable, (sts.Spec.Replicas-1)/2, sts.Spec.Replicas/2+1)
	}
	checkEnv(t, "client", objs["Deployment/baton-client"], cli.Known(&worker.Config{}))
}

// checkEnv checks a workload's first container: every BATON_ variable is one the
// binary reads, and BATON_JOIN names the servers' headless Service. It returns the
// variables' values ("fieldRef:PATH" for those taken from the pod).
func checkEnv(t *testing.T, what string, o k8sObject, known []string) map[string]string {
	t.Helper()
	cs := o.Spec.Template.Spec.Containers
	if len(cs) == 0 {
		t.Errorf("%s: no container", what)
		return nil
	}
	env := map[string]string{}
	for _, e := range cs[0].Env {
		if !contains(known, e.Name) {
			t.Errorf("%s: %s is not a variable the binary reads (it would warn)", what, e.Name)
		}
		env[e.Name] = e.Value
		if p := e.ValueFrom.FieldRef.FieldPath; p != "" {
			env[e.Name] = "fieldRef:" + p
		}
	}
	if env["BATON_JOIN"] != "baton-server" {
		t.Errorf("%s: BATON_JOIN %q, want the headless Service baton-server", what, env["BATON_JOIN"])
	}
	return env
}
