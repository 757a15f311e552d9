"""The audit log gets an index for each tenant's page of it, newest first, and cannot
be edited: on PostgreSQL a trigger refuses UPDATE and DELETE of its rows, except the
retention sweep's deletes (tenants.audit.sweep_old_entries sets `stepwell.audit_retention`
for its own transaction) and the one update Django makes when a user, token or tenant
is deleted: forgetting that reference (SET_NULL), nothing else. SQLite (`make run`) has
no such trigger."""

from django.db import migrations, models

CREATE = """
CREATE OR REPLACE FUNCTION stepwell_audit_log_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('stepwell.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE'
        AND to_jsonb(NEW) - 'actor_id' - 'actor_token_id' - 'tenant_id'
            = to_jsonb(OLD) - 'actor_id' - 'actor_token_id' - 'tenant_id'
        AND (NEW.actor_id IS NULL OR NEW.actor_id = OLD.actor_id)
        AND (NEW.actor_token_id IS NULL OR NEW.actor_token_id = OLD.actor_token_id)
        AND (NEW.tenant_id IS NULL OR NEW.tenant_id = OLD.tenant_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log cannot be changed: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER tenants_auditlog_immutable BEFORE UPDATE OR DELETE ON tenants_auditlog
    FOR EACH ROW EXECUTE FUNCTION stepwell_audit_log_immutable();
"""

DROP = """
DROP TRIGGER IF EXISTS tenants_auditlog_immutable ON tenants_auditlog;
DROP FUNCTION IF EXISTS stepwell_audit_log_immutable();
"""


def on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, None)  # no parameters: its % are literal

    return run


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_quota_retention_days")]

    operations = [
        migrations.AddIndex(
            model_name="auditlog",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="audit_log_of_tenant"),
        ),
        migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP)),
    ]
