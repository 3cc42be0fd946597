"""scale (issue 11): PostgreSQL checks a planned message's patient and session per statement

PostgreSQL checks a foreign key with one query per row written (its RI triggers), and
planned messages are most of what the write path writes: an import of 10,000 appointments
writes some 87,000 of them, and the foreign keys' checks were 46 % of the server's samples
in `perf`, most of them these two (5 December). The two keys stay, checked once per
statement instead:

- an insert into `planned_message` ends with one query per key over the statement's new rows
  (a transition table): every patient and session they name must exist, and is locked as
  PostgreSQL's own check locks it (FOR KEY SHARE), so that no one deletes it before this
  transaction commits;
- an update that changes a planned message's patient or session checks the new ones, row
  by row (the write path never does);
- a patient or session cannot be deleted, nor its id changed, while a planned message names
  it (PostgreSQL's NO ACTION, which these keys had).

The error is PostgreSQL's own (SQLSTATE 23503, foreign_key_violation), so the drivers raise
what they raised. SQLite keeps its foreign keys: its check is a lookup in the same process,
not a query per row. The models still declare both keys (erasure follows them);
`scheduler.db.BY_STATEMENT` names them, so that the schema comparison knows.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The error both checks below raise, as PostgreSQL's own foreign key raises it: a message's
# `key` in `column` names no row of `parent`.
_MISSING = """
CREATE FUNCTION aftercare_planned_missing(column_name text, parent text, key bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE foreign_key_violation USING
        MESSAGE = format(
            'insert or update on table "planned_message" violates foreign key constraint '
            '"planned_message_%s_fkey"', column_name),
        DETAIL = format('Key (%s)=(%s) is not present in table "%s".', column_name, key, parent),
        TABLE = 'planned_message';
END
$$
"""

# The messages' new rows, checked once per statement (the transition table `new_rows`): static
# SQL, so that PL/pgSQL plans it once per connection (0.15 ms for one booking's nine rows, as
# the row-by-row check; 23 ms for 20,000 rows, against about 200 ms).
_REFERENCES_EXIST = """
CREATE FUNCTION aftercare_planned_references_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    WITH wanted AS (SELECT DISTINCT patient_id AS id FROM new_rows),
    held AS (SELECT p.id FROM patient p JOIN wanted USING (id) FOR KEY SHARE OF p)
    SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM held) INTO missing;
    IF missing > 0 THEN
        SELECT n.patient_id INTO missing FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM patient p WHERE p.id = n.patient_id) LIMIT 1;
        PERFORM aftercare_planned_missing('patient_id', 'patient', missing);
    END IF;
    WITH wanted AS (SELECT DISTINCT session_id AS id FROM new_rows WHERE session_id IS NOT NULL),
    held AS (SELECT s.id FROM treatment_session s JOIN wanted USING (id) FOR KEY SHARE OF s)
    SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM held) INTO missing;
    IF missing > 0 THEN
        SELECT n.session_id INTO missing FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM treatment_session s WHERE s.id = n.session_id)
            AND n.session_id IS NOT NULL LIMIT 1;
        PERFORM aftercare_planned_missing('session_id', 'treatment_session', missing);
    END IF;
    RETURN NULL;
END
$$
"""

# A message whose patient or session changes (row by row: the write path never does).
_REFERENCE_EXISTS = """
CREATE FUNCTION aftercare_planned_reference_exists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM patient WHERE id = NEW.patient_id FOR KEY SHARE;
    IF NOT FOUND THEN
        PERFORM aftercare_planned_missing('patient_id', 'patient', NEW.patient_id);
    END IF;
    IF NEW.session_id IS NOT NULL THEN
        PERFORM 1 FROM treatment_session WHERE id = NEW.session_id FOR KEY SHARE;
        IF NOT FOUND THEN
            PERFORM aftercare_planned_missing('session_id', 'treatment_session', NEW.session_id);
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""

# A patient or session deleted, or its id changed: no message may name it still (NO ACTION).
# TG_ARGV[0] is the messages' column that names the table's rows.
_UNREFERENCED = """
CREATE FUNCTION aftercare_planned_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = 'patient_id' THEN
        PERFORM 1 FROM planned_message WHERE patient_id = OLD.id LIMIT 1;
    ELSE
        PERFORM 1 FROM planned_message WHERE session_id = OLD.id LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format(
                'update or delete on table "%s" violates foreign key constraint '
                '"planned_message_%s_fkey" on table "planned_message"', TG_TABLE_NAME, TG_ARGV[0]),
            DETAIL = format(
                'Key (id)=(%s) is still referenced from table "planned_message".', OLD.id),
            TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$
"""

_KEYS = (("patient_id", "patient"), ("session_id", "treatment_session"))
_FUNCTIONS = ("references_exist", "reference_exists", "unreferenced")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in (_MISSING, _REFERENCES_EXIST, _REFERENCE_EXISTS, _UNREFERENCED):
        op.execute(function)
    for column, _ in _KEYS:
        op.drop_constraint(f"planned_message_{column}_fkey", "planned_message", "foreignkey")
    op.execute(
        "CREATE TRIGGER planned_message_references AFTER INSERT ON planned_message "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION aftercare_planned_references_exist()"
    )
    op.execute(
        "CREATE TRIGGER planned_message_references_changed "
        "AFTER UPDATE OF patient_id, session_id ON planned_message FOR EACH ROW "
        "WHEN (OLD.patient_id IS DISTINCT FROM NEW.patient_id "
        "OR OLD.session_id IS DISTINCT FROM NEW.session_id) "
        "EXECUTE FUNCTION aftercare_planned_reference_exists()"
    )
    for column, parent in _KEYS:
        op.execute(
            f"CREATE TRIGGER {parent}_planned_messages AFTER DELETE ON {parent} "
            f"FOR EACH ROW EXECUTE FUNCTION aftercare_planned_unreferenced('{column}')"
        )
        op.execute(
            f"CREATE TRIGGER {parent}_planned_messages_key AFTER UPDATE OF id ON {parent} "
            "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
            f"EXECUTE FUNCTION aftercare_planned_unreferenced('{column}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for _, parent in _KEYS:
        op.execute(f"DROP TRIGGER {parent}_planned_messages_key ON {parent}")
        op.execute(f"DROP TRIGGER {parent}_planned_messages ON {parent}")
    op.execute("DROP TRIGGER planned_message_references_changed ON planned_message")
    op.execute("DROP TRIGGER planned_message_references ON planned_message")
    for column, parent in _KEYS:
        op.create_foreign_key(
            f"planned_message_{column}_fkey", "planned_message", parent, [column], ["id"]
        )
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION aftercare_planned_{function}()")
    op.execute("DROP FUNCTION aftercare_planned_missing(text, text, bigint)")
