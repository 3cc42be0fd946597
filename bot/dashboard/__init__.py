"""The clinic dashboard (issue 12): pages for staff, in a browser and as a Telegram Mini App,
served by the bot process over aiohttp (bot/dashboard/server.py). Imported only when the
dashboard is switched on (AFTERCARE_DASHBOARD_PORT): aiohttp's server and Jinja2 cost a
polling bot's start-up otherwise."""
