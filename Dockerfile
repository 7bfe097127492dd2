# The product's image for every Ray pod (RayCluster, RayJob, RayService): Ray's own image with the
# same Ray and Python versions as pyproject.toml (ray==2.60.0, Python 3.11), plus this project.
# Build and tag it with the Ray version, as kuberay/ manifests expect:
#   docker build -t greenhouse-mlops:0.1.0-ray2.60.0-py311 .
# Airflow is not in here: it runs in its own environment (stack/airflow-env) and only submits jobs.
FROM rayproject/ray:2.60.0-py311

WORKDIR /home/ray/greenhouse
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users app ./app
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users serve_configs ./serve_configs

# Ray 2.60.0 is already installed: pip keeps it and adds the project's other dependencies. The
# check fails the build if anything moved Ray away from the version the cluster runs.
RUN pip install --no-cache-dir . \
 && python -c "import ray, app, jobs.train; assert ray.__version__ == '2.60.0', ray.__version__"

# Job entrypoints: python -m jobs.<name>; Serve: app.serve.<app>:build_app (serve_configs/).
ENV GH_DATA_DIR=/tmp/greenhouse
