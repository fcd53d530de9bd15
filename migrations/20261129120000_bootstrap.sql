-- Kopilka's shared schema: the bootstrap. Forward-only; each later table lives in its own
-- timestamped file and names its owning crate in a comment.

-- Kopilka relies on gen_random_uuid() being built in and on jsonb subscripting.
DO $$
BEGIN
    IF current_setting('server_version_num')::int < 140000 THEN
        RAISE EXCEPTION 'Kopilka needs PostgreSQL 14 or newer (this server is %)',
            current_setting('server_version');
    END IF;
END
$$;

-- Every table with mutable rows carries updated_at, kept by this trigger so no query can
-- forget it. Attach it with: SELECT kopilka_manage_updated_at('table_name');
CREATE OR REPLACE FUNCTION kopilka_set_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION kopilka_manage_updated_at(_table regclass) RETURNS void AS $$
BEGIN
    EXECUTE format(
        'CREATE TRIGGER set_updated_at BEFORE UPDATE ON %s
         FOR EACH ROW EXECUTE FUNCTION kopilka_set_updated_at()',
        _table
    );
END;
$$ LANGUAGE plpgsql;

-- Ledger rows are immutable (ARCHITECTURE.md §2): attach this to refuse UPDATE and DELETE.
-- Attach it with: SELECT kopilka_make_append_only('table_name');
CREATE OR REPLACE FUNCTION kopilka_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are immutable', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION kopilka_make_append_only(_table regclass) RETURNS void AS $$
BEGIN
    EXECUTE format(
        'CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON %s
         FOR EACH ROW EXECUTE FUNCTION kopilka_refuse_change()',
        _table
    );
END;
$$ LANGUAGE plpgsql;
