from tenants.models import AuditLog


def test_owners_see_their_own_tenants_audit_log(alice, acme, globex):
    AuditLog.objects.create(tenant=acme, action="version.rejected", reason="calls home")
    AuditLog.objects.create(tenant=globex, action="tenant.suspended", reason="globex secret")
    page = alice.get("/audit/").content.decode()
    assert "version.rejected" in page and "calls home" in page
    assert "globex secret" not in page


def test_viewers_may_not_read_the_audit_log(carol, acme):
    assert carol.get("/audit/").status_code == 403


def test_token_creation_in_the_console_lands_in_the_audit_log(alice, acme):
    alice.post("/tokens/", {"name": "deploy"})
    page = alice.get("/audit/").content.decode()
    assert "token.created" in page
