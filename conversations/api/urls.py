"""Routes of the conversations API, included under /rest/v1/."""

from django.urls import path

from conversations.api import views

urlpatterns = [
    path("email/address/proxy", views.ProxyAddressView.as_view(), name="email-address-proxy"),
]
