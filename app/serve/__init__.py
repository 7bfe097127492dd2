"""Ray Serve deployments and typed application builders."""
