"""The Nodes page (nodes with their links, alias generation, destinations) and Contacts."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.decorators import account_required
from portal.forms import ContactForm, DestinationForm, LinkForm, NodeForm
from tracking import access
from tracking.models import Contact, Link, Node
from tracking.services import directory

NODES_PER_PAGE = 20
CONTACTS_PER_PAGE = 50


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


@account_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("portal:communications")


@account_required
def nodes(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    found = Node.objects.for_account(request.account).prefetch_related(
        Prefetch("links", queryset=Link.objects.select_related("destination"))
    )
    if query:
        found = found.filter(
            Q(node_name__icontains=query)
            | Q(node_id__icontains=query)
            | Q(links__link_name__icontains=query)
            | Q(links__link_id__icontains=query)
            | Q(links__email_address__icontains=query)
        ).distinct()
    page = Paginator(found, NODES_PER_PAGE).get_page(request.GET.get("page"))
    querystring = urlencode({"q": query}) if query else ""
    return render(
        request, "portal/nodes.html", {"page": page, "q": query, "querystring": querystring}
    )


def _form_page(request: HttpRequest, form, *, title: str, cancel: str, submit: str = "Save"):
    return render(
        request,
        "portal/form_page.html",
        {"form": form, "title": title, "cancel": cancel, "submit": submit},
        status=400 if form.is_bound else 200,
    )


@account_required
def node_form(request: HttpRequest, node_id: str | None = None) -> HttpResponse:
    """A new node (no `node_id`), or one of the account's to edit."""
    node = access.get_node_for_account(request.account, node_id) if node_id else None
    form = NodeForm(request.POST or None, account=request.account, node=node)
    if form.is_valid() and (saved := form.save()):
        messages.success(request, f"Node {saved.node_name} {'saved' if node else 'created'}.")
        return redirect(f"{reverse('portal:nodes')}#node-{saved.node_id}")
    title = f"Edit node {node.node_name}" if node else "New node"
    return _form_page(request, form, title=title, cancel=reverse("portal:nodes"))


@account_required
def link_form(request: HttpRequest, link_id: str | None = None) -> HttpResponse:
    """A new link (no `link_id`; `?node=` picks its node), or one of the account's to edit,
    beside its alias address."""
    link = access.get_link_for_account(request.account, link_id) if link_id else None
    node_id = request.GET.get("node") if link is None else None
    node = access.get_node_for_account(request.account, node_id) if node_id else None
    form = LinkForm(request.POST or None, account=request.account, link=link, node=node)
    if form.is_valid() and (saved := form.save()):
        messages.success(request, f"Link {saved.link_name} {'saved' if link else 'created'}.")
        return redirect(f"{reverse('portal:nodes')}#link-{saved.link_id}")
    if link is None:
        return _form_page(request, form, title="New link", cancel=reverse("portal:nodes"))
    return render(
        request,
        "portal/link_form.html",
        {"form": form, "link": link},
        status=400 if form.is_bound else 200,
    )


def _link_row(request: HttpRequest, link: Link, *, flash: str = "") -> HttpResponse:
    return render(request, "portal/partials/link_row.html", {"link": link, "flash": flash})


@require_POST
@account_required
def link_generate_alias(request: HttpRequest, link_id: str) -> HttpResponse:
    link = access.get_link_for_account(request.account, link_id)
    link, created = directory.link_generate_alias(link=link)
    note = "generated" if created else "already assigned"
    if _is_htmx(request):
        return _link_row(request, link, flash=f"Email address {note}")
    messages.success(request, f"{link.link_name}: email address {link.email_address} {note}.")
    return redirect(f"{reverse('portal:nodes')}#link-{link.link_id}")


@account_required
def link_destination(request: HttpRequest, link_id: str) -> HttpResponse:
    """The contact picker: inline in the Nodes page (htmx) or as a page of its own."""
    link = access.get_link_for_account(request.account, link_id)
    if request.method == "POST" and request.POST.get("cancel"):
        return _link_row(request, link)
    form = DestinationForm(request.POST or None, account=request.account, link=link)
    if form.is_valid():
        link = form.save()
        if _is_htmx(request):
            return _link_row(request, link, flash="Destination saved")
        messages.success(request, f"{link.link_name}: email destination saved.")
        return redirect(f"{reverse('portal:nodes')}#link-{link.link_id}")
    template = "portal/partials/destination_picker.html" if _is_htmx(request) else None
    return render(
        request,
        template or "portal/destination_page.html",
        {"form": form, "link": link},
        # htmx swaps only 2xx answers; the full page says "bad input" the HTTP way.
        status=400 if form.is_bound and not template else 200,
    )


@account_required
def contacts(request: HttpRequest) -> HttpResponse:
    found = (
        Contact.objects.for_account(request.account)
        .annotate(link_count=Count("links"))
        .order_by("name", "contact_id")
    )
    page = Paginator(found, CONTACTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "portal/contacts.html", {"page": page})


@account_required
def contact_form(request: HttpRequest, contact_id: str | None = None) -> HttpResponse:
    """A new contact (no `contact_id`), or one of the account's to edit."""
    contact = access.get_contact_for_account(request.account, contact_id) if contact_id else None
    form = ContactForm(request.POST or None, account=request.account, contact=contact)
    if form.is_valid() and (saved := form.save()):
        messages.success(request, f"Contact {saved.name} {'saved' if contact else 'created'}.")
        return redirect("portal:contacts")
    title = f"Edit contact {contact.name}" if contact else "New contact"
    return _form_page(request, form, title=title, cancel=reverse("portal:contacts"))


@account_required
def contact_delete(request: HttpRequest, contact_id: str) -> HttpResponse:
    contact = access.get_contact_for_account(request.account, contact_id)
    links = contact.links.select_related("node").order_by("link_name")
    if request.method == "POST":
        try:
            directory.contact_delete(contact=contact)
        except directory.ContactInUse as in_use:
            messages.error(
                request,
                f"{contact.name} cannot be deleted: it is the email destination of "
                f"{len(in_use.link_ids)} link(s) ({', '.join(in_use.link_ids)}). "
                "Choose another destination for them first.",
            )
            return redirect("portal:contact_delete", contact_id=contact.contact_id)
        messages.success(request, f"Contact {contact.name} deleted.")
        return redirect("portal:contacts")
    return render(request, "portal/contact_delete.html", {"contact": contact, "links": links})
