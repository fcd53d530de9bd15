-- The audit log is append-only by privileges (issue #17, item 8). Row triggers already
-- refuse UPDATE and DELETE (they bind the owner and superusers too, whom grants do not);
-- here the grants go as well, for PUBLIC and for the role that runs the migrations (the
-- application's role, usually the table's owner), and TRUNCATE, which row triggers do not
-- see, is refused by a statement trigger. An owner could grant itself the privilege back
-- (that is an explicit, visible act); the application never does.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', current_user);
END
$$;
DROP TRIGGER IF EXISTS refuse_truncate ON audit_log;
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION kopilka_refuse_change();
