# The rule-set change marker was called `token`, which read as a LiveKit token.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("agents_app", "0002_rule_deployment_attributes")]
    operations = [
        migrations.RenameField(model_name="rulesetversion", old_name="token", new_name="change_marker"),
        migrations.AlterField(
            model_name="rulesetversion",
            name="change_marker",
            field=models.CharField(
                default="initial",
                editable=False,
                help_text="A new random value on every change, e.g. '3f2a9c0e5b7d4a61'; processes serving "
                "tokens reload their rules when it moves. Not a LiveKit token.",
                max_length=64,
                verbose_name="change marker",
            ),
        ),
    ]
