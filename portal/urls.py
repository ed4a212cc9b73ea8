from django.contrib.auth import views as auth_views
from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="portal/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/new", views.node_form, name="node_create"),
    path("nodes/<str:node_id>/edit", views.node_form, name="node_edit"),
    path("links/new", views.link_form, name="link_create"),
    path("links/<str:link_id>/edit", views.link_form, name="link_edit"),
    path(
        "links/<str:link_id>/email-address",
        views.link_generate_alias,
        name="link_generate_alias",
    ),
    path("links/<str:link_id>/destination", views.link_destination, name="link_destination"),
    path("contacts/", views.contacts, name="contacts"),
    path("contacts/new", views.contact_form, name="contact_create"),
    path("contacts/<str:contact_id>/edit", views.contact_form, name="contact_edit"),
    path("contacts/<str:contact_id>/delete", views.contact_delete, name="contact_delete"),
    path("communications/", views.communications, name="communications"),
    path("communications/export.csv", views.communications_export, name="communications_export"),
    path("messages/<str:message_id>", views.message_detail, name="message_detail"),
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/new", views.webhook_create, name="webhook_create"),
    path("webhooks/<str:webhook_id>/", views.webhook_detail, name="webhook_detail"),
    path("webhooks/<str:webhook_id>/edit", views.webhook_edit, name="webhook_edit"),
    path("webhooks/<str:webhook_id>/toggle", views.webhook_toggle, name="webhook_toggle"),
    path("webhooks/<str:webhook_id>/rotate", views.webhook_rotate, name="webhook_rotate"),
    path("webhooks/<str:webhook_id>/test", views.webhook_test, name="webhook_test"),
    path("webhooks/<str:webhook_id>/delete", views.webhook_delete, name="webhook_delete"),
    path(
        "webhooks/<str:webhook_id>/deliveries/<int:delivery_pk>/retry",
        views.webhook_delivery_retry,
        name="webhook_delivery_retry",
    ),
    path("suppressions/", views.suppression_list, name="suppressions"),
    path("suppressions/remove", views.suppression_remove, name="suppression_remove"),
    path("messages/<str:message_id>/preview", views.message_preview, name="message_preview"),
]
