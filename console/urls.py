from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from console import automation, secret_pages, staff, views, webhook_views
from console.api import api
from console.metrics import metrics_view

handler404 = "console.views.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("staff/", staff.staff_overview, name="staff_overview"),
    path("staff/console/", staff.open_console, name="staff_open_console"),
    path("staff/console/leave/", staff.leave_console, name="staff_leave_console"),
    path("api/v1/", api.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("no-tenant/", views.no_tenant, name="no_tenant"),
    path("tenant/", views.switch, name="switch_tenant"),
    path("workflows/", views.workflow_list, name="workflow_list"),
    path("workflows/_new/", views.workflow_new, name="workflow_new"),
    path("workflows/_validate/", views.workflow_validate, name="workflow_validate"),
    path("workflows/<str:name>/", views.workflow_detail, name="workflow_detail"),
    path("workflows/<str:name>/versions/", views.workflow_versions, name="workflow_versions"),
    path("workflows/<str:name>/start/", views.workflow_start, name="workflow_start"),
    # Schedule names and event types start with a letter or digit, never with "_".
    path("workflows/<str:name>/schedules/_new/", automation.schedule_edit, name="schedule_new"),
    path(
        "workflows/<str:name>/schedules/<str:schedule>/",
        automation.schedule_edit,
        name="schedule_edit",
    ),
    path(
        "workflows/<str:name>/schedules/<str:schedule>/delete/",
        automation.schedule_delete,
        name="schedule_delete",
    ),
    path(
        "workflows/<str:name>/schedules/<str:schedule>/<str:action>/",
        automation.schedule_pause,
        name="schedule_pause",
    ),
    path("workflows/<str:name>/triggers/", automation.trigger_add, name="trigger_add"),
    path(
        "workflows/<str:name>/triggers/<str:event_type>/delete/",
        automation.trigger_delete,
        name="trigger_delete",
    ),
    path("instances/", views.instance_list, name="instance_list"),
    path("instances/<str:key>/", views.instance_detail, name="instance_detail"),
    path("instances/<str:key>/data/", views.instance_data, name="instance_data"),
    path("instances/<str:key>/events/", views.instance_event, name="instance_event"),
    path("instances/<str:key>/history/", views.instance_history, name="instance_history"),
    path("instances/<str:key>/restart/", views.instance_restart, name="instance_restart"),
    path("instances/<str:key>/rerun/", views.instance_rerun, name="instance_rerun"),
    path(
        "instances/<str:key>/<str:action>/",
        views.instance_control,
        name="instance_control",
    ),
    path("tokens/", views.token_list, name="tokens"),
    path("secrets/", secret_pages.secret_list, name="secrets"),
    path("secrets/<str:name>/delete/", secret_pages.secret_delete, name="secret_delete"),
    path("audit/", views.audit_log, name="audit_log"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("webhooks/", webhook_views.webhook_list, name="webhooks"),
    path("webhooks/<int:pk>/", webhook_views.webhook_detail, name="webhook_detail"),
    path("webhooks/<int:pk>/delete/", webhook_views.webhook_delete, name="webhook_delete"),
    path(
        "webhooks/<int:pk>/deliveries/<int:delivery>/resend/",
        webhook_views.delivery_resend,
        name="delivery_resend",
    ),
]
