from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("streamsync", "0003_source_state"),
    ]

    operations = [
        migrations.CreateModel(
            name="Position",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("group", models.CharField(help_text="Kafka consumer group", max_length=255)),
                (
                    "agent",
                    models.CharField(
                        help_text="the agent reading the topic, e.g. streamsync.sync.ipam", max_length=255
                    ),
                ),
                ("topic", models.CharField(max_length=255)),
                ("partition", models.IntegerField()),
                ("next_offset", models.BigIntegerField(help_text="offset of the next record to apply")),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("group", "agent", "topic", "partition"), name="streamsync_position_partition"
                    )
                ],
            },
        ),
    ]
