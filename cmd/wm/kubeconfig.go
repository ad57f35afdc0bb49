package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/schema"
)

func newKubeconfigCmd(g *globals) *cobra.Command {
	var owner, tokenFile string
	cmd := &cobra.Command{
		Use:   "kubeconfig [--owner NAME]",
		Short: "Print a kubeconfig a student can use with kubectl on their own namespace",
		Long: `Print a kubeconfig for the student NAME: the cluster's server URL and CA
taken from the server config's kubernetes.kubeconfig (TLS always verified),
the student's namespace as the default, and the student's user name. With
--token-file the token is written in; otherwise the student adds their own
credentials (for example an OIDC login plugin) to the user entry.

Without --owner, wm kubeconfig asks the server you logged in to (wm login)
for a credential of your own: a token of your namespace's ServiceAccount,
valid for an hour, that kubectl get, logs and exec on your pods accept.`,
		Example: `  wm kubeconfig --owner alice --config /etc/wm/wm-server.yaml > alice.kubeconfig
  KUBECONFIG=alice.kubeconfig kubectl get pods
  wm kubeconfig > ~/.kube/wm && KUBECONFIG=~/.kube/wm kubectl get pods   # as a student`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if owner == "" {
				// A student: their own credential, from the server they
				// logged in to (client.go).
				return clientKubeconfig(cmd)
			}
			if msg := schema.AccountProblem(owner); msg != "" {
				return fmt.Errorf("--owner: %s", msg)
			}
			cfg, err := loadConfig(g.config)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitError{exitInvalid}
			}
			token := ""
			if tokenFile != "" {
				if token, err = readSecret("--token-file", tokenFile); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
					return exitError{exitInvalid}
				}
			}
			out, err := studentKubeconfig(cfg, owner, token)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "the student's account `NAME`")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "write the token in this `FILE` into the kubeconfig")
	return cmd
}

// studentKubeconfig builds the kubeconfig of owner from the admins'
// kubeconfig: same server and CA, the student's namespace and user.
func studentKubeconfig(cfg *schema.ServerConfig, owner, token string) ([]byte, error) {
	k := cfg.Kubernetes
	if k == nil {
		return nil, errors.New("the server config has no kubernetes section")
	}
	cluster, ca, err := adminCluster(k)
	if err != nil {
		return nil, err
	}
	user := k.UserPrefix + owner
	out := clientcmdapi.NewConfig()
	out.Clusters["whalemountain"] = &clientcmdapi.Cluster{Server: cluster.Server, CertificateAuthorityData: ca, TLSServerName: cluster.TLSServerName}
	out.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	out.Contexts[owner] = &clientcmdapi.Context{Cluster: "whalemountain", AuthInfo: user, Namespace: k.NamespacePrefix + owner}
	out.CurrentContext = owner
	return clientcmd.Write(*out)
}

// adminCluster is the cluster of the admins' kubeconfig (its current
// context) and its CA, which students' kubeconfigs point at; a cluster
// spoken to over HTTPS without a CA is refused.
func adminCluster(k *schema.Kubernetes) (*clientcmdapi.Cluster, []byte, error) {
	admin, err := clientcmd.LoadFromFile(k.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes.kubeconfig: %w", err)
	}
	ctx, ok := admin.Contexts[admin.CurrentContext]
	if !ok {
		return nil, nil, fmt.Errorf("kubernetes.kubeconfig %s has no current context", k.Kubeconfig)
	}
	cluster, ok := admin.Clusters[ctx.Cluster]
	if !ok {
		return nil, nil, fmt.Errorf("kubernetes.kubeconfig %s: no cluster %q", k.Kubeconfig, ctx.Cluster)
	}
	ca := cluster.CertificateAuthorityData
	if len(ca) == 0 && cluster.CertificateAuthority != "" {
		if ca, err = os.ReadFile(cluster.CertificateAuthority); err != nil {
			return nil, nil, fmt.Errorf("read the cluster's CA: %w", err)
		}
	}
	if len(ca) == 0 && strings.HasPrefix(cluster.Server, "https://") {
		return nil, nil, errors.New("the cluster in kubernetes.kubeconfig has no CA: refusing to write a kubeconfig that skips TLS verification")
	}
	return cluster, ca, nil
}

// kubeAccess is the access API's side of the cluster: WhaleMountain's
// own client, and the server and CA students' credentials point at.
func kubeAccess(cfg *schema.ServerConfig) (*access.Kube, error) {
	cluster, ca, err := adminCluster(cfg.Kubernetes)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	set := kube.Settings{Kubernetes: *cfg.Kubernetes, Instance: cfg.Instance}
	return &access.Kube{Client: client, Config: rc, Settings: set, Server: cluster.Server, CA: ca}, nil
}
