"""scale (issue 11): PostgreSQL checks a planned message's patient and session per statement

PostgreSQL checks a foreign key with one query per row written (its RI triggers), and
planned messages are most of what the write path writes: an import of 10,000 appointments
writes some 87,000 of them, and checking their two keys was about 40 % of the server's work
(`perf`, 5 December). The two keys stay, checked once per statement instead:

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

# Arguments of the child's functions: (column, parent table) pairs; of the parent's: (child
# table, child column) pairs. Each parent's key is its `id`.
_REFERENCES_EXIST = """
CREATE FUNCTION aftercare_references_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    missing bigint;
BEGIN
    WHILE i < TG_NARGS LOOP
        EXECUTE format(
            'WITH wanted AS (SELECT DISTINCT %1$I AS id FROM new_rows WHERE %1$I IS NOT NULL), '
            'held AS (SELECT p.id FROM %2$I p JOIN wanted USING (id) FOR KEY SHARE OF p) '
            'SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM held)',
            TG_ARGV[i], TG_ARGV[i + 1]
        ) INTO missing;
        IF missing > 0 THEN
            RAISE foreign_key_violation USING
                MESSAGE = format(
                    'insert or update on table "%s" violates foreign key constraint "%s_%s_fkey"',
                    TG_TABLE_NAME, TG_TABLE_NAME, TG_ARGV[i]),
                DETAIL = format(
                    '%s value(s) of (%s) not present in table "%s".',
                    missing, TG_ARGV[i], TG_ARGV[i + 1]),
                TABLE = TG_TABLE_NAME;
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END
$$
"""

_REFERENCE_EXISTS = """
CREATE FUNCTION aftercare_reference_exists() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    wanted bigint;
    found int;
BEGIN
    WHILE i < TG_NARGS LOOP
        wanted := (to_jsonb(NEW) ->> TG_ARGV[i])::bigint;
        IF wanted IS NOT NULL THEN
            found := NULL;
            EXECUTE format('SELECT 1 FROM %I WHERE id = $1 FOR KEY SHARE', TG_ARGV[i + 1])
                INTO found USING wanted;
            IF found IS NULL THEN
                RAISE foreign_key_violation USING
                    MESSAGE = format(
                        'insert or update on table "%s" violates foreign key constraint '
                        '"%s_%s_fkey"', TG_TABLE_NAME, TG_TABLE_NAME, TG_ARGV[i]),
                    DETAIL = format(
                        'Key (%s)=(%s) is not present in table "%s".',
                        TG_ARGV[i], wanted, TG_ARGV[i + 1]),
                    TABLE = TG_TABLE_NAME;
            END IF;
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END
$$
"""

_UNREFERENCED = """
CREATE FUNCTION aftercare_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    referenced boolean;
BEGIN
    WHILE i < TG_NARGS LOOP
        EXECUTE format(
            'SELECT EXISTS (SELECT 1 FROM %I WHERE %I = $1)', TG_ARGV[i], TG_ARGV[i + 1]
        ) INTO referenced USING OLD.id;
        IF referenced THEN
            RAISE foreign_key_violation USING
                MESSAGE = format(
                    'update or delete on table "%s" violates foreign key constraint "%s_%s_fkey" '
                    'on table "%s"', TG_TABLE_NAME, TG_ARGV[i], TG_ARGV[i + 1], TG_ARGV[i]),
                DETAIL = format(
                    'Key (id)=(%s) is still referenced from table "%s".', OLD.id, TG_ARGV[i]),
                TABLE = TG_TABLE_NAME;
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END
$$
"""

_KEYS = (("patient_id", "patient"), ("session_id", "treatment_session"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in (_REFERENCES_EXIST, _REFERENCE_EXISTS, _UNREFERENCED):
        op.execute(function)
    for column, _ in _KEYS:
        op.drop_constraint(f"planned_message_{column}_fkey", "planned_message", "foreignkey")
    pairs = ", ".join(f"'{column}', '{parent}'" for column, parent in _KEYS)
    op.execute(
        "CREATE TRIGGER planned_message_references AFTER INSERT ON planned_message "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION aftercare_references_exist({pairs})"
    )
    op.execute(
        "CREATE TRIGGER planned_message_references_changed "
        "AFTER UPDATE OF patient_id, session_id ON planned_message FOR EACH ROW "
        "WHEN (OLD.patient_id IS DISTINCT FROM NEW.patient_id "
        "OR OLD.session_id IS DISTINCT FROM NEW.session_id) "
        f"EXECUTE FUNCTION aftercare_reference_exists({pairs})"
    )
    for column, parent in _KEYS:
        op.execute(
            f"CREATE TRIGGER {parent}_planned_messages AFTER DELETE ON {parent} "
            f"FOR EACH ROW EXECUTE FUNCTION aftercare_unreferenced('planned_message', '{column}')"
        )
        op.execute(
            f"CREATE TRIGGER {parent}_planned_messages_key AFTER UPDATE OF id ON {parent} "
            "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
            f"EXECUTE FUNCTION aftercare_unreferenced('planned_message', '{column}')"
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
    for function in ("unreferenced", "reference_exists", "references_exist"):
        op.execute(f"DROP FUNCTION aftercare_{function}()")
