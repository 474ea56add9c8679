import django.core.serializers.json
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("streamsync", "0005_last_applied"),
    ]

    operations = [
        migrations.AddField(
            model_name="parkedevent",
            name="awaits",
            field=models.JSONField(
                blank=True,
                encoder=django.core.serializers.json.DjangoJSONEncoder,
                help_text="objects the key's create waits for, [[model label, [[field, value], ...]], ...]; null: not known",
                null=True,
            ),
        ),
    ]
