from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from iovox_email import views

urlpatterns = [
    path("livez", views.livez, name="livez"),
    path("healthz", views.livez, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("", include("tracking.engagement.urls")),
    path("rest/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("rest/v1/docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("rest/v1/", include("conversations.api.urls")),
    path("rest/v1/", include("tracking.api.urls")),
    re_path(r"^rest/(?P<path>.*)$", views.api_not_found),
    path("admin/", admin.site.urls),
    path("anymail/", include("tracking.esp_webhooks")),
    path("", include("portal.urls")),
]

handler404 = "iovox_email.views.not_found"
handler500 = "iovox_email.views.internal_error"
