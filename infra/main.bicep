// Hookflow on Azure Functions Flex Consumption, deployed with `azd up`.
//
// Subscription scope, like the azd function templates: the template creates its own resource
// group (rg-<environment>), so `azd down` removes everything by deleting that one group.
// Plain Bicep resources only (no registry modules), so the whole template can be read and
// checked offline (tests/infra).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment. Names the resource group and seeds every other resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. Flex Consumption runs in a subset of regions: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

// The callback signing keys never appear in this repository. main.parameters.json maps this
// parameter to the azd environment variable HOOKFLOW_SIGNING_KEYS; while that variable is
// empty, azd generates a key on the first `azd up` and keeps it with the environment, so
// later runs reuse it. Setting the variable (`azd env set HOOKFLOW_SIGNING_KEYS new,old`)
// takes over for key rotation (infra/DEPLOYMENT.md).
@secure()
@minLength(16)
@description('HOOKFLOW_SIGNING_KEYS: comma-separated callback URL signing keys; the first signs, all verify.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      // Letters and digits only: no comma (the key separator) and nothing to quote in a shell.
      noSpecial: true
    }
  }
})
param signingKeys string

// Tunables are passed through as strings; empty means "the app's own default" (shared/settings.py),
// so defaults live in one place.
@description('HOOKFLOW_TABLE_PREFIX; empty = the app default.')
param tablePrefix string = ''

@description('HOOKFLOW_HTTP_TIMEOUT as an ISO 8601 duration (PT120S); empty = the app default.')
param httpTimeout string = ''

@description('HOOKFLOW_MAX_BODY_BYTES; empty = the app default.')
param maxBodyBytes string = ''

@description('HOOKFLOW_MAX_WAIT: longest a webhook action waits without its own timeout (ISO 8601, P90D); empty = the app default.')
param maxWait string = ''

@description('HOOKFLOW_WORKFLOW_CACHE: how long an instance starts runs from a workflow it has read before reading it again (ISO 8601, PT5S; PT0S = always read); empty = the app default.')
param workflowCache string = ''

// The Functions host resolves %HOOKFLOW_POLL_SCHEDULE% in the timer binding itself, so this
// one cannot be left empty: an empty value falls back to the app's documented default here.
@description('HOOKFLOW_POLL_SCHEDULE: NCRONTAB schedule of the sweep timer; empty = every 5 seconds. Each tick is a billed execution.')
param pollSchedule string = ''

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on Flex Consumption scale-out, which also caps what a traffic spike can cost.')
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Override of the resource group name; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Override of the function app name (it becomes <name>.azurewebsites.net); empty = a generated one.')
param functionAppName string = ''

var abbrs = loadJsonContent('abbreviations.json')
// Same inputs, same names: re-running `azd up` updates the resources instead of duplicating them.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}hookflow-${resourceToken}'
var deploymentContainerName = 'app-package'

// The HOOKFLOW_* settings decided here. The function app module adds the two it has to derive
// itself: HOOKFLOW_PUBLIC_BASE_URL (from the app's host name) and HOOKFLOW_SIGNING_KEYS (kept
// in a secure parameter all the way down). tests/infra checks that, together, they cover every
// setting shared/settings.py reads in Azure.
var hookflowSettings = {
  HOOKFLOW_TABLE_PREFIX: tablePrefix
  HOOKFLOW_HTTP_TIMEOUT: httpTimeout
  HOOKFLOW_MAX_BODY_BYTES: maxBodyBytes
  HOOKFLOW_MAX_WAIT: maxWait
  HOOKFLOW_WORKFLOW_CACHE: workflowCache
  HOOKFLOW_POLL_SCHEDULE: empty(pollSchedule) ? '*/5 * * * * *' : pollSchedule
  // The SSRF guard stays on in Azure: workflow actions must not reach private addresses.
  HOOKFLOW_ALLOW_PRIVATE_NETWORK: 'false'
}

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'core/security/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}hookflow-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    principalId: identity.outputs.principalId
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appSettings: hookflowSettings
    signingKeys: signingKeys
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  // The host reaches storage with the identity from its first start; granting the roles first
  // saves a round of failed starts while the assignments propagate.
  dependsOn: [
    rbac
  ]
}

// azd writes these into .azure/<environment>/.env (none of them is a secret).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
