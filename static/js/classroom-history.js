// The session history: its start and end times in the viewer's local time, as on the dashboard and reports.
import { showLocalTimes } from "./classroom-charts.js";

showLocalTimes();
