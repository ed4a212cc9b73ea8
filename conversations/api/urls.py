"""Routes of the conversations API, included under /rest/v1/ before the tracking routes."""

from django.urls import path

from conversations.api import views

urlpatterns = [
    # Replaces tracking's own POST /rest/v1/email: one route, proxy domains included.
    path("email", views.SendEmailView.as_view(), name="email-send"),
    path("email/address/proxy", views.ProxyAddressView.as_view(), name="email-address-proxy"),
]
