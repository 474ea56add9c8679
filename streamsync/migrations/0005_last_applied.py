from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("streamsync", "0004_position"),
    ]

    operations = [
        migrations.CreateModel(
            name="LastApplied",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "agent",
                    models.CharField(help_text="the agent that applied it, e.g. streamsync.sync.ipam", max_length=255),
                ),
                ("topic", models.CharField(max_length=255)),
                ("key", models.CharField(help_text="canonical object key", max_length=1000)),
                ("partition", models.IntegerField()),
                ("offset", models.BigIntegerField(help_text="offset of the latest event applied for the key")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("agent", "topic", "key"), name="streamsync_lastapplied_agent_topic_key"
                    )
                ],
            },
        ),
    ]
