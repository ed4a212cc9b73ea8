"""Routes of the pixel and the click redirect, outside /rest/ (paths as in `tokens`)."""

from django.urls import path

from tracking.engagement import views

app_name = "engagement"

urlpatterns = [
    path("t/o/<str:token>.gif", views.open_pixel, name="open"),
    path("t/c/<str:token>", views.click_redirect, name="click"),
]
