from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="ParkedEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("source", models.CharField(max_length=100)),
                ("key", models.CharField(help_text="canonical object key of the event", max_length=1000)),
                (
                    "message_key",
                    models.BinaryField(help_text="the original message key, for its dead letter", null=True),
                ),
                ("value", models.BinaryField(help_text="the original message bytes")),
                ("original_topic", models.CharField(max_length=255)),
                ("original_partition", models.IntegerField()),
                ("original_offset", models.BigIntegerField()),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(db_index=True)),
                ("last_reason", models.TextField(blank=True)),
                ("parked_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["id"],
                "indexes": [models.Index(fields=["source", "key"], name="streamsync__source_0a1bda_idx")],
            },
        ),
    ]
