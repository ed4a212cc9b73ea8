"""Who may see portal pages: a logged-in user of an account."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render


def account_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous users go to the login page; users without an account (support staff) are sent
    to admin, their tool, and anyone else gets a page saying why there is nothing to see."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.account_id is None:
            if request.user.is_staff:
                messages.info(request, "Your login belongs to no account: use the admin.")
                return redirect("admin:index")
            return render(request, "portal/no_account.html", status=403)
        request.account = request.user.account
        return view(request, *args, **kwargs)

    return wrapper
