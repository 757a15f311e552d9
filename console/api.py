from django.http import Http404
from ninja import NinjaAPI

from execution.api import router as execution_router
from tenants.auth import TokenAuth

api = NinjaAPI(
    title="Stepwell API",
    version="1",
    urls_namespace="api-v1",
    auth=TokenAuth(),
    docs_url="/docs",
)
api.add_router("", execution_router)


@api.exception_handler(Http404)
def not_found(request, exc):
    return api.create_response(request, {"detail": str(exc) or "not found"}, status=404)
