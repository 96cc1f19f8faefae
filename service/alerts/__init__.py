"""Price alerts kept in SQL with Redis as the matching index: the service (:class:`AlertService`), shared by
the REST routes and ``cryptoflow alerts``, and the reconciler (:func:`reconcile`, :func:`reconcile_forever`)."""

from service.alerts.model import OPERATOR, AlertOut, Scope
from service.alerts.reconcile import ImportReport, ReconcileReport, import_from_redis, reconcile, reconcile_forever
from service.alerts.service import AlertService

__all__ = ["OPERATOR", "AlertOut", "AlertService", "ImportReport", "ReconcileReport", "Scope",
           "import_from_redis", "reconcile", "reconcile_forever"]
