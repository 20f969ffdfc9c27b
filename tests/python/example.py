import omk

o = omk.Omk()  # state: $OMK_STATE_DIR or ~/.local/state/omk; project: the current directory
print("doctor:", o.doctor()["status"])
team = o.team_run("2:executor", "Start the project", subtasks=[
    "Write the README [write:README.md:# Hello]",  # [...] directives script the test agent
    "Add a license file [write:LICENSE:MIT]"])
print(team["name"], team["phase"], "tokens:", team["tokens"])
for task in team["tasks"]:
    print(f'  {task["id"]} {task["status"]:<9} {task["title"]}')
