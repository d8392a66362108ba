"""MLflow tracking: the run's hook and registry, the store it talks to, the pyfunc model, and
the queries the CLI asks (runs, models, champions).

``mlflow`` is imported only when one of these modules calls it, never by importing them.

Modules:
    store: the tracking URI, MLflow's import, and the store's reachability check.
    hook: :class:`~segmatch.tracking.hook.MlflowTracking`, the run's hook and model registry.
    pyfunc: the registered model's pyfunc class and signature.
    queries: runs, registered versions and champions, as the API and the CLI ask for them.
"""
