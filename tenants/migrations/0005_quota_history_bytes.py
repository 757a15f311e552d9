from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0004_quota_warm_by_default'),
    ]

    operations = [
        migrations.AddField(
            model_name='quota',
            name='history_bytes',
            field=models.PositiveBigIntegerField(default=33554432),
        ),
    ]
