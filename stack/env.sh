# shellcheck shell=bash
# URLs and client credentials of the local engines started by `stack/stack up`, for the product's
# settings (GH_ prefix) and Ray's and MLflow's own clients. Source it: `source stack/env.sh`
# (values already set in the environment are kept). Production points the same variables at real
# clusters. The URLs carry file paths (CA, client certificate, password file), never a secret.
#
#   GH_BUS_URL        Kafka 4 (KRaft: one node at 127.0.0.1:9092, or three with --kafka-brokers 3), SASL_SSL with SCRAM-SHA-512:
#                     kafka://127.0.0.1:9092?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512
#                     &sasl_username=greenhouse&sasl_password_file=<run>/secrets/kafka-password
#                     &ssl_cafile=<run>/tls/ca.crt   (parsed by app/bus/kafka.py)
#   GH_METADATA_URL   MongoDB wire protocol (FerretDB + SQLite), database "greenhouse", mutual TLS:
#                     mongodb://127.0.0.1:27017/greenhouse?tls=true&tlsCAFile=...&tlsCertificateKeyFile=...
#   GH_LAKE_URL       HDFS through WebHDFS (NameNode HTTP 9870), lake root /greenhouse; plain HTTP on
#                     loopback; the user part is the WebHDFS user.name (permissions are disabled)
#   GH_TRACKING_URL   MLflow tracking server over HTTPS: https://127.0.0.1:5000?ca_file=<run>/tls/ca.crt
#                     (app/tracking strips ca_file and verifies the server with it)
#   GH_RAY_ADDRESS, RAY_API_SERVER_ADDRESS   Ray Jobs API / dashboard http://127.0.0.1:8265
#                     (`ray job submit`, JobSubmissionClient). RAY_ADDRESS is deliberately NOT
#                     exported: an http:// RAY_ADDRESS makes every ray.init() in the shell fail
#                     ("Invalid Ray address"), and a GCS one makes every local ray.init() join the head.
#   GH_RAY_GCS_ADDRESS  Ray GCS, for a driver joining the head: ray.init(address="127.0.0.1:6379").
#   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  the head runs with node IP 127.0.0.1; a driver on Linux
#                     rewrites "127.0.0.1" to the machine's outward address unless this is 0.
#   RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH, GH_RAY__AUTH_TOKEN_FILE   the head runs with token
#                     auth; Ray's CLIs and SDKs (and the product's settings) read the token file.
#   MLFLOW_TRACKING_SERVER_CERT_PATH  the CA, for MLflow's own CLI in this shell.
#   GH_PROMETHEUS_URL Prometheus (plain HTTP on loopback).
#   GH_ALERTMANAGER_URL  Alertmanager (http://127.0.0.1:9193), fed by that Prometheus.
#   GH_ALERT_RECEIVER_URL  the webhook receiver every alert is routed to; GET it to list them
#                     (http://127.0.0.1:9194/alerts, label filters as query parameters).
#   KUBECONFIG        only while `stack/stack up k8s` runs: the admin kubeconfig of the local
#                     Kubernetes control plane (kubectl and `greenhouse kuberay ...` use it).
_gh_stack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$_gh_stack_dir/stack" env)"
unset _gh_stack_dir
