# shellcheck shell=bash
# URLs of the local engines started by `stack/stack up`, for the product's settings (GH_ prefix).
# Source it: `source stack/env.sh` (values already set in the environment are kept).
# Production points the same variables at real clusters.

# Kafka 4 (KRaft, single node): bootstrap 127.0.0.1:9092
export GH_BUS_URL="${GH_BUS_URL:-kafka://127.0.0.1:9092}"
# MongoDB wire protocol (FerretDB + SQLite here): database "greenhouse"
export GH_METADATA_URL="${GH_METADATA_URL:-mongodb://127.0.0.1:27017/greenhouse}"
# HDFS through WebHDFS (NameNode HTTP 9870, RPC 8020), lake root /greenhouse; the URL's user part
# is the WebHDFS user.name (simple auth; permissions are disabled, so any name works)
export GH_LAKE_URL="${GH_LAKE_URL:-webhdfs://greenhouse@127.0.0.1:9870/greenhouse}"
# MLflow tracking server (sqlite backend, proxied artifacts: mlflow-artifacts:/)
export GH_TRACKING_URL="${GH_TRACKING_URL:-http://127.0.0.1:5000}"
# Ray Jobs API / dashboard: Settings.ray_address, `ray job submit`, JobSubmissionClient.
export GH_RAY_ADDRESS="${GH_RAY_ADDRESS:-http://127.0.0.1:8265}"
# What the Ray Jobs CLI/SDK read first. RAY_ADDRESS is deliberately NOT exported: an http://
# RAY_ADDRESS makes every ray.init() in the shell fail ("Invalid Ray address"), and a GCS one makes
# every test's local ray.init() join the stack's head.
export RAY_API_SERVER_ADDRESS="${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}"
# Ray GCS, for a driver joining the head: ray.init(address="127.0.0.1:6379").
export GH_RAY_GCS_ADDRESS="${GH_RAY_GCS_ADDRESS:-127.0.0.1:6379}"
# The head runs with node IP 127.0.0.1. A driver on Linux rewrites "127.0.0.1" to the machine's
# outward address unless this is 0 (Ray's switch for single-machine clusters), then cannot connect.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"
# The head runs without token auth (loopback only); say so to clients explicitly, so that a
# ~/.ray/auth_token left by any local ray.init() does not switch them to token mode.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export GH_PROMETHEUS_URL="${GH_PROMETHEUS_URL:-http://127.0.0.1:9090}"
