"""Routes of the REST API under /rest/v1/."""

from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from tracking.api import directory_views, email_views, events_views, search_views

UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"

router = SimpleRouter(trailing_slash=False)
router.register("nodes", directory_views.NodeViewSet, basename="node")
router.register("links", directory_views.LinkViewSet, basename="link")
router.register("contacts", directory_views.ContactViewSet, basename="contact")
router.register("webhooks", events_views.WebhookViewSet, basename="webhook")

urlpatterns = [
    path("email", email_views.SendEmailView.as_view(), name="email-send"),
    path("email/search", search_views.EmailSearchView.as_view(), name="email-search"),
    # A UUID only, so /email/search and /email/address/proxy stay free for their own views.
    re_path(
        rf"^email/(?P<message_id>{UUID})$",
        email_views.EmailDetailView.as_view(),
        name="email-detail",
    ),
    path("suppressions", events_views.SuppressionListView.as_view(), name="suppressions"),
    path(
        "suppressions/<str:email_address>",
        events_views.SuppressionDetailView.as_view(),
        name="suppression-detail",
    ),
    path("", include(router.urls)),
]
