"""One module per resource, each exposing ``router`` (an ``APIRouter`` with full ``/v1/...`` paths)."""
