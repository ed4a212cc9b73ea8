"""Routes of the REST API under /rest/v1/."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from tracking.api import directory_views, search_views

router = SimpleRouter(trailing_slash=False)
router.register("nodes", directory_views.NodeViewSet, basename="node")
router.register("links", directory_views.LinkViewSet, basename="link")
router.register("contacts", directory_views.ContactViewSet, basename="contact")

urlpatterns = [
    path("email/search", search_views.EmailSearchView.as_view(), name="email-search"),
    path("", include(router.urls)),
]
