from django.db import migrations, models

# The history instances recorded before the quota: what each activation would count,
# with the database's JSON text standing in for Python's (a few spaces apart).
COUNT_HISTORY = """
UPDATE execution_instance SET history_bytes = COALESCE((
    SELECT SUM(COALESCE(LENGTH(CAST(s.output AS TEXT)), 0)
               + COALESCE(LENGTH(CAST(s.error AS TEXT)), 0) + LENGTH(s.logs))
    FROM execution_step s WHERE s.instance_id = execution_instance.id), 0)
"""


class Migration(migrations.Migration):

    dependencies = [
        ('execution', '0005_moderation_pause_reasons'),
    ]

    operations = [
        migrations.AddField(
            model_name='instance',
            name='history_bytes',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='instance',
            name='sandbox_failures',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RunSQL(COUNT_HISTORY, migrations.RunSQL.noop),
    ]
