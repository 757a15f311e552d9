from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from tenants.models import Membership


def healthz(request):
    return JsonResponse({"ok": True})


@login_required
def home(request):
    memberships = Membership.objects.filter(user=request.user).select_related("tenant")
    return render(request, "console/home.html", {"memberships": memberships})
