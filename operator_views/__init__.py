"""The operator's views over the apps below: the admin pages of every model (`admin`), the
dispatch dashboard (`dashboard`) and the doctor (`doctor`: page, API and `manage.py doctor`).

They read agents_app, rooms_app and watch_app (through their selectors, and act through their
services); none of those imports anything here."""
